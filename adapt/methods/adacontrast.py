"""``adacontrast``: AdaContrast (Chen et al., CVPR 2022) carried from images to scenes.

As in AdaContrast: online (weights, optimizer, teacher, bank and queue carry over the
stream); a momentum (EMA) teacher sees a weak view, the student two strong views; the
teacher's predictions are refined by soft k-NN voting in a feature bank (the mean of the
``ac_neighbors`` nearest bank entries' probabilities, cosine similarity); the loss is the
cross-entropy of the student's strong view against the refined pseudo-labels, plus InfoNCE
between the student's strong view 1 and the teacher's strong view 2 with negatives from a
key queue (negatives of the same pseudo-label left out), plus the diversity term
``sum_c pbar_c log pbar_c``; weights 1, 1, 1; SGD (momentum 0.9, nesterov, weight decay 1e-4)
over ``psi_3D`` and ``rho_Y``; EMA momentum 0.999; bank and queue 16384; temperature 0.07.

Our choices for 3D (the README's method table): a sample is a voxel; per scene
``ac_samples`` voxels of the weak view are drawn (seeded by run seed and scene), each followed
into the strong views through one of its cached points; the weak view is the scene as it is,
a strong view is a random rotation about +Z, mirror, scale and colour jitter with training's
magnitudes (``AugmentConfig``), voxelized again; embeddings are the L2-normalised ``psi_3D``
features (no projection head: none was trained); the bank is a FIFO over the stream and a
scene's samples enter it before their refinement (AdaContrast's bank holds every target
sample, itself included); BN follows ``--bn-mode``; every scene gets ``ac_steps`` steps, then
the student predicts. A non-finite loss or gradient undoes the scene's step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttkd.adapt.bn import bn_phase
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods.base import Method, SceneOutcome
from tttkd.adapt.safety import Divergence
from tttkd.adapt.scenes import SceneData, network_input, scene_seed
from tttkd.adapt.ttt import predict_view
from tttkd.model.augment import PointSet, centre, color_jitter, mirror, rgb_shift, rotate_z, scale
from tttkd.model.config import AugmentConfig
from tttkd.model.network import SegKDNet
from tttkd.model.sparse.base import SparseContext

__all__ = ["AdaContrast", "Fifo", "diversity_loss", "info_nce", "refine_pseudo_labels"]


def refine_pseudo_labels(
    feats: Tensor, bank_feats: Tensor, bank_probs: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Soft k-NN voting: for each (unit) row of ``feats`` the mean probabilities of its ``k``
    most cosine-similar bank entries, and their argmax ``(labels [N], probs [N, C])``."""
    k = min(k, bank_feats.shape[0])
    nearest = (feats @ bank_feats.T).topk(k, dim=1).indices
    probs = bank_probs[nearest].mean(1)
    return probs.argmax(1), probs


def info_nce(
    q: Tensor, k: Tensor, queue: Tensor, queue_labels: Tensor, labels: Tensor, t: float
) -> Tensor:
    """InfoNCE of unit queries ``q`` against their keys ``k`` (positives) and the queue
    (negatives), leaving out queue entries with the query's pseudo-label."""
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.T
    neg = neg.masked_fill(labels[:, None] == queue_labels[None, :], float("-inf"))
    logits = torch.cat([pos, neg], 1) / t
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def diversity_loss(logits: Tensor) -> Tensor:
    """``sum_c pbar_c log pbar_c`` of the mean softmax (lowest when classes are balanced)."""
    pbar = torch.softmax(logits.float(), 1).mean(0)
    return (pbar * torch.log(pbar + 1e-8)).sum()


class Fifo:
    """A first-in first-out store of rows (feature bank or key queue) of fixed capacity."""

    def __init__(
        self, capacity: int, widths: dict[str, tuple[int, torch.dtype]], device: torch.device
    ):
        """``widths[name] = (row width, dtype)``; width 0 stores one value per row."""
        self.capacity = capacity
        self.data = {
            name: torch.zeros((capacity, w) if w else (capacity,), dtype=dt, device=device)
            for name, (w, dt) in widths.items()
        }
        self.size = 0
        self.ptr = 0

    def push(self, **rows: Tensor) -> None:
        n = len(next(iter(rows.values())))
        idx = (self.ptr + torch.arange(n, device=self.data[next(iter(rows))].device)) % (
            self.capacity
        )
        for name, value in rows.items():
            self.data[name][idx] = value.to(self.data[name].dtype)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def __getitem__(self, name: str) -> Tensor:
        return self.data[name][: self.size]


@dataclass
class _Aug:
    """A strong view: network input and the voxel row of every cached point."""

    feats: Tensor
    context: SparseContext
    row_of_point: Tensor


def strong_view(scene: SceneData, rng: np.random.Generator, aug: AugmentConfig) -> _Aug:
    """Random rotation about +Z, mirror, scale, contrast/brightness and channel shift, then
    the network input path of every view (``network_input``)."""
    rec = scene.record
    ps = PointSet.points_only(rec.xyz, rec.rgb, rec.label)
    ps = rotate_z(centre(ps), float(rng.uniform(0.0, 2 * math.pi)))
    flips = rng.random(2) < aug.mirror_p
    ps = scale(mirror(ps, bool(flips[0]), bool(flips[1])), float(rng.uniform(*aug.scale)))
    contrast = float(rng.uniform(*aug.contrast))
    ps = color_jitter(ps, contrast, float(rng.uniform(-aug.brightness, aug.brightness)))
    ps = rgb_shift(ps, rng.uniform(-aug.rgb_shift, aug.rgb_shift, 3))
    coords, feats, rop = network_input(replace(rec, rgb=ps.rgb), ps.xyz, scene.voxel_size)
    coords4 = torch.cat([torch.zeros((coords.shape[0], 1), dtype=torch.int32), coords], 1)
    device = scene.device
    return _Aug(feats.to(device), SparseContext(coords4.to(device), scene.backend), rop.to(device))


class AdaContrast(Method):
    """Online AdaContrast on scenes (module docstring for the 3D choices)."""

    name = "adacontrast"
    online = True

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        super().__init__(net, cfg)
        self.net.set_trainable(psi_3d=True, rho_y=True, rho_2d=False)
        groups = self.net.param_groups()
        self.optimizer = torch.optim.SGD(
            groups["psi_3D"] + groups["rho_Y"],
            lr=cfg.ac_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
        )
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        device = next(self.net.parameters()).device
        dim, classes = self.net.backbone.out_channels, self.net.num_classes
        self.bank = Fifo(
            cfg.ac_bank, {"feats": (dim, torch.float32), "probs": (classes, torch.float32)}, device
        )
        self.queue = Fifo(
            cfg.ac_bank, {"keys": (dim, torch.float32), "labels": (0, torch.long)}, device
        )
        self.augment = AugmentConfig()

    def _snapshot(self) -> dict:
        return {
            "net": self.state_snapshot(),
            "teacher": {k: v.clone() for k, v in self.teacher.state_dict().items()},
            "optim": copy.deepcopy(self.optimizer.state_dict()),
            "bank": (
                {k: v.clone() for k, v in self.bank.data.items()},
                self.bank.size,
                self.bank.ptr,
            ),
            "queue": (
                {k: v.clone() for k, v in self.queue.data.items()},
                self.queue.size,
                self.queue.ptr,
            ),
        }

    def _restore(self, snap: dict) -> None:
        self.net.load_state_dict(snap["net"], strict=True)
        self.teacher.load_state_dict(snap["teacher"], strict=True)
        self.optimizer.load_state_dict(snap["optim"])
        for store, key in ((self.bank, "bank"), (self.queue, "queue")):
            store.data, store.size, store.ptr = snap[key]

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        cfg = self.cfg
        rng = np.random.default_rng(scene_seed(cfg.seed, scene.scene_id, "adacontrast"))
        weak = scene.view(0.0)
        rows, points = _sample_voxels(weak.row_of_point, weak.num_voxels, cfg.ac_samples, rng)
        snap = self._snapshot()
        losses: list[float] = []
        changed = []
        for step in range(cfg.ac_steps):
            s1, s2 = strong_view(scene, rng, self.augment), strong_view(scene, rng, self.augment)
            with torch.no_grad(), bn_phase(self.teacher, cfg.bn_mode, "predict"):
                fw = self.teacher.features(weak.feats, weak.context)[rows]
                probs_w = torch.softmax(self.teacher.seg_head(fw).float(), 1)
                emb_w = F.normalize(fw.float(), dim=1)
                f2 = self.teacher.features(s2.feats, s2.context)[s2.row_of_point[points]]
                keys = F.normalize(f2.float(), dim=1)
            self.bank.push(feats=emb_w, probs=probs_w)
            pseudo, _ = refine_pseudo_labels(
                emb_w, self.bank["feats"], self.bank["probs"], cfg.ac_neighbors
            )
            changed.append(float((pseudo != probs_w.argmax(1)).float().mean()))
            self.optimizer.zero_grad(set_to_none=True)
            with bn_phase(self.net, cfg.bn_mode, "step"):
                f1 = self.net.features(s1.feats, s1.context)[s1.row_of_point[points]]
                logits1 = self.net.seg_head(f1).float()
                q = F.normalize(f1.float(), dim=1)
                loss = (
                    F.cross_entropy(logits1, pseudo)
                    + info_nce(
                        q,
                        keys,
                        self.queue["keys"],
                        self.queue["labels"],
                        pseudo,
                        cfg.ac_temperature,
                    )
                    + diversity_loss(logits1)
                )
            value = float(loss.detach())
            losses.append(value)
            if math.isfinite(value):
                loss.backward()
                grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]]
                finite = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
            if not math.isfinite(value) or not finite:
                out.fallback = Divergence(step, value, f"non-finite AdaContrast loss or "
                                          f"gradient at step {step}")  # fmt: skip
                self._restore(snap)
                break
            self.optimizer.step()
            self._ema()
            self.queue.push(keys=keys, labels=pseudo)
            out.steps += 1
        out.losses.append(losses)
        out.updated = out.steps > 0 and out.fallback is None
        out.extra["pseudo_labels_changed_by_knn"] = float(np.mean(changed)) if changed else None
        out.extra["bank_size"] = self.bank.size

    @torch.no_grad()
    def _ema(self) -> None:
        m = self.cfg.ac_ema
        student = dict(self.net.named_parameters())
        for name, p in self.teacher.named_parameters():
            p.mul_(m).add_(student[name].detach(), alpha=1 - m)
        student_buffers = dict(self.net.named_buffers())
        for name, b in self.teacher.named_buffers():
            b.copy_(student_buffers[name])

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        return predict_view(self.net, scene.view(angle), self.cfg.bn_mode)


def _sample_voxels(
    row_of_point: Tensor, num_voxels: int, samples: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """``samples`` distinct voxel rows (sorted) and, for each, one cached point in it."""
    rop = row_of_point.cpu().numpy()
    order = np.argsort(rop, kind="stable")
    first = order[np.searchsorted(rop[order], np.arange(num_voxels))]  # a point per voxel
    rows = np.sort(rng.choice(num_voxels, size=min(samples, num_voxels), replace=False))
    device = row_of_point.device
    return torch.from_numpy(rows).to(device), torch.from_numpy(first[rows]).to(device)
