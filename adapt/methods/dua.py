"""``bn``: DUA-style BatchNorm statistics from the test scene (Mirza et al., CVPR 2022).

Our 3D reading of DUA: starting from the training statistics, the scene is passed through
the network ``bn_passes`` times (each pass a random rotation about +Z and a random mirror of
X, seeded by the scene id) with BN in training mode and a decaying momentum
``max(bn_min_momentum, bn_momentum * bn_decay**k)``; then it is predicted with the updated
running statistics. No weight changes. By default statistics are reset per scene (offline),
as for TTT-KD, so every scene is adapted on its own. ``bn_online`` is DUA's own form: the
statistics are kept over the stream and the momentum schedule runs over it (pass ``k`` of the
stream, counted across scenes), so later scenes move the statistics less and less.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tttkd.adapt.bn import backbone_norms
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods.base import Method, SceneOutcome
from tttkd.adapt.rotations import rotate_about_up
from tttkd.adapt.scenes import SceneData, network_input, scene_seed
from tttkd.adapt.ttt import predict_view
from tttkd.model.network import SegKDNet

__all__ = ["DUAStatistics", "dua_momenta"]


def dua_momenta(passes: int, start: float, decay: float, floor: float) -> list[float]:
    """DUA's momentum schedule, one value per pass."""
    return [max(floor, start * decay**k) for k in range(passes)]


class DUAStatistics(Method):
    """Re-estimate psi_3D's BN statistics on the scene, then predict."""

    name = "bn"

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        super().__init__(net, cfg)
        self.online = cfg.bn_online
        self.passes_done = 0  # over the stream (the online schedule continues from here)

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        cfg = self.cfg
        start = self.passes_done if cfg.bn_online else 0
        if not cfg.bn_online:
            self.reset()
        rng = np.random.default_rng(scene_seed(cfg.seed, scene.scene_id, "dua"))
        norms = backbone_norms(self.net)
        schedule = (cfg.bn_momentum, cfg.bn_decay, cfg.bn_min_momentum)
        momenta = dua_momenta(start + cfg.bn_passes, *schedule)[start:]
        saved = [m.momentum for m in norms]
        self.net.eval()
        try:
            for m in norms:
                m.train()
            for momentum in momenta:
                for m in norms:
                    m.momentum = momentum
                feats, ctx = self._pass_input(scene, rng)
                with torch.no_grad():
                    self.net.features(feats, ctx)
        finally:
            for m, mom in zip(norms, saved):
                m.momentum = mom
            self.net.eval()
        out.updated = True
        self.passes_done += len(momenta)
        out.extra["bn_passes"] = len(momenta)
        out.extra["bn_momentum_last"] = momenta[-1]

    def _pass_input(self, scene: SceneData, rng: np.random.Generator) -> tuple[Tensor, object]:
        if not self.cfg.bn_augment:
            view = scene.view(0.0)
            return view.feats, view.context
        from tttkd.model.sparse.base import SparseContext

        xyz = rotate_about_up(scene.record.xyz, float(rng.uniform(0.0, 2.0 * math.pi)))
        if rng.random() < 0.5:
            xyz = xyz * np.array([-1.0, 1.0, 1.0])
        coords, feats, _ = network_input(scene.record, xyz, scene.voxel_size)
        coords4 = torch.cat([torch.zeros((coords.shape[0], 1), dtype=torch.int32), coords], 1)
        coords4 = coords4.to(scene.device)
        return feats.to(scene.device), SparseContext(coords4, scene.backend)

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        return predict_view(self.net, scene.view(angle))
