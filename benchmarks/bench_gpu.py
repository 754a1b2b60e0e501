"""GPU speed of the 3D network: backends x precision, TTT-KD steps, online stream, training.

    python -m benchmarks.bench_gpu [--out benchmarks/RESULTS-new.md]   # on a CUDA machine
    python -m benchmarks.bench_gpu --device cpu --quick                # the code path, on CPU

Self-contained: builds its rooms in memory and, for the adapt figures, a real cache from
synthetic ScanNet scenes (real prep, Zarr) and a random-weight checkpoint in a temporary
folder. Prints, on the device it finds:

0. for each backend, its largest deviation from the torch reference on this device (the room
   through the backbone, forward and every parameter gradient; ok at <= 1e-4);
1. ms per forward+backward of MinkUNet34C on a ~60k-voxel room (context reused, as in TTT)
   for each available backend and precision (fp32, bf16 autocast), with peak memory;
2. ms per TTT-KD step through the real ``tttkd-adapt`` code path (``run_adaptation``),
   eager and with CUDA-graph capture (``--cuda-graphs off|on``);
3. online TTT-KD-O scenes/s at stride 1 (one step per scene);
4. training ms per step on 2 rooms (seg + KD-style loss, SGD, bf16 autocast on CUDA);

each with its ratio to the torch reference backend measured IN THE SAME RUN and to the
paper's 177 ms TTT step (A6000, MinkowskiEngine). Every backend but the reference is first
checked against it on this device (``model/sparse/select.py``); one that fails is listed
as refused, not timed. On a machine without CUDA (and no ``--device cpu``) it says so and
exits 0. Uses no torch API newer than 2.11.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

PAPER_TTT_MS = 177.0  # the paper's TTT step (A6000, MinkowskiEngine, 4 cm ScanNet)


@dataclass
class Row:
    """One measured figure; ``ref_ms`` is the torch-reference figure of the same kind."""

    what: str
    backend: str
    precision: str
    ms: float | None
    peak_mib: float | None = None
    ref_ms: float | None = None
    unit: str = "ms"
    note: str = ""

    def cells(self) -> list[str]:
        if self.ms is None:
            return [self.what, self.backend, self.precision, "-", "-", "-", "-", self.note]
        vs_ref = f"{self.ref_ms / self.ms:.2f}x" if self.ref_ms and self.unit == "ms" else "-"
        if self.ref_ms and self.unit == "scenes/s":
            vs_ref = f"{self.ms / self.ref_ms:.2f}x"
        vs_paper = f"{PAPER_TTT_MS / self.ms:.2f}x" if self.unit == "ms" else "-"
        peak = f"{self.peak_mib:.0f}" if self.peak_mib is not None else "-"
        value = f"{self.ms:.1e}" if self.unit == "rel err" else f"{self.ms:.1f}"
        return [
            self.what,
            self.backend,
            self.precision,
            f"{value} {self.unit}",
            vs_ref,
            vs_paper,
            peak,
            self.note,
        ]


@dataclass
class Bench:
    device: torch.device
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    ref: dict[str, float] = field(default_factory=dict)  # the torch reference, per figure

    def record(
        self,
        what: str,
        backend: str,
        precision: str,
        run: Callable[[], tuple[float, float | None]],
        *,
        unit: str = "ms",
        note: str = "",
    ) -> None:
        """One figure; ``run() -> (value, peak MiB)``. A failure (a backend without bf16,
        out of memory) becomes a row saying so, and the other figures still run."""
        try:
            value, peak = run()
        except Exception as err:  # reported in the table, never hidden
            msg = f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
            print(f"  {what} {backend} {precision}: FAILED ({msg})")
            self.rows.append(Row(what, backend, precision, None, note=f"failed: {msg}"))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return
        if backend == "torch":  # measured first: the baseline of this figure
            self.ref.setdefault(what, value)
        self.rows.append(Row(what, backend, precision, value, peak, self.ref.get(what), unit, note))
        shown = f"{value:.1e}" if unit == "rel err" else f"{value:.2f}"
        print(f"  {what} {backend} {precision} {note}: {shown} {unit}")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return None

    def autocast(self, precision: str):
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def timed(self, fn: Callable[[], None], repeats: int) -> float:
        """Median ms of ``repeats`` calls after one warm-up call."""
        fn()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def _backends(args: argparse.Namespace, device: torch.device) -> tuple[list[str], list[Row]]:
    """The backends to time (the reference first) and rows for those refused by the probe."""
    from tttkd.model.sparse.base import BackendUnavailableError, get_backend
    from tttkd.model.sparse.select import REFERENCE, BackendCheckError, probe_backend

    names = [REFERENCE] + [b for b in args.backends.split(",") if b and b != REFERENCE]
    ok, refused = [], []
    for name in names:
        try:
            get_backend(name)
            if name != REFERENCE:
                probe_backend(name, device)
        except BackendUnavailableError as err:
            print(f"  {name}: not installed ({err})")
            continue
        except BackendCheckError as err:
            print(f"  {name}: REFUSED: {err}")
            refused.append(Row("start-up check", name, "fp32", None, note="refused (see log)"))
            continue
        ok.append(name)
    return ok, refused


VERIFY_TOL = 1e-4  # |a - b| <= 1e-4 * max(1, max|b|), as tests/model/test_backend_equivalence


def verify_room(b: Bench, backends: list[str]) -> None:
    """Each backend against the torch reference ON THIS DEVICE: the benchmark room through
    the backbone (running BN statistics, fp32), forward and every parameter gradient."""
    from tttkd.model.minkunet import build_backbone
    from tttkd.model.sparse.base import SparseContext, SparseTensor
    from tttkd.model.sparse.testing import room_coords

    a = b.args
    torch.manual_seed(0)
    coords = room_coords(a.voxels, seed=5, thickness=1).to(b.device)
    feats = torch.randn(coords.shape[0], 3, device=b.device)
    net = build_backbone(a.arch, in_channels=3).to(b.device).eval()

    def run(backend: str) -> list[torch.Tensor]:
        net.zero_grad(set_to_none=True)
        out = net(SparseTensor.from_context(feats, SparseContext(coords, backend))).feats
        out.square().mean().backward()
        return [out.detach()] + [p.grad.detach().clone() for p in net.parameters()]

    ref = run("torch")
    for backend in backends[1:]:

        def err(backend=backend) -> tuple[float, float | None]:
            got = run(backend)
            worst = max(
                float((g - r).abs().max()) / max(1.0, float(r.abs().max()))
                for g, r in zip(got, ref)
            )
            return worst, None

        b.record("equals torch (room, fwd + all grads)", backend, "fp32", err, unit="rel err")
        row = b.rows[-1]
        if row.ms is not None:
            row.note = "ok" if row.ms <= VERIFY_TOL else f"MISMATCH (> {VERIFY_TOL:g})"


def bench_network(b: Bench, backends: list[str]) -> None:
    """Forward+backward and training step of MinkUNet34C on rooms built in memory."""
    from tttkd.model.minkunet import build_backbone
    from tttkd.model.network import SegKDNet
    from tttkd.model.sparse.base import SparseContext, SparseTensor
    from tttkd.model.sparse.testing import room_coords

    a = b.args
    torch.manual_seed(0)
    coords = room_coords(a.voxels, thickness=1).to(b.device)
    feats = torch.randn(coords.shape[0], 3, device=b.device)
    second = room_coords(a.voxels, seed=1, thickness=1)
    second[:, 0] = 1
    pair = torch.cat([coords.cpu(), second]).to(b.device)  # two rooms, batch 0 and 1
    pair_feats = torch.randn(pair.shape[0], 3, device=b.device)
    labels = torch.randint(0, 20, (pair.shape[0],), device=b.device)
    n = coords.shape[0]
    print(f"{a.arch}, room of {n / 1000:.1f}k voxels (training: 2 rooms, {pair.shape[0]})")
    net = SegKDNet(build_backbone(a.arch, in_channels=3), 20, 384).to(b.device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    for backend in backends:
        ctx = SparseContext(coords, backend)
        for prec in a.precisions.split(","):

            def step(ctx=ctx, prec=prec) -> None:
                net.zero_grad(set_to_none=True)
                with b.autocast(prec):
                    out = net.backbone(SparseTensor.from_context(feats, ctx)).feats
                out.float().square().mean().backward()

            def fwd_bwd(step=step) -> tuple[float, float | None]:
                b.reset_peak()
                return b.timed(step, a.repeats), b.peak_mib()

            b.record("fwd+bwd, 1 room", backend, prec, fwd_bwd)
        pctx = SparseContext(pair, backend)
        train_prec = "bf16" if b.device.type == "cuda" else "fp32"  # train.py: amp on CUDA

        def train_step(pctx=pctx, train_prec=train_prec) -> None:
            opt.zero_grad(set_to_none=True)
            with b.autocast(train_prec):
                f = net.features(pair_feats, pctx)
                loss = torch.nn.functional.cross_entropy(net.seg_head(f).float(), labels)
                loss = loss + net.kd_head(f).float().square().mean()
            loss.backward()
            opt.step()

        def train(train_step=train_step) -> tuple[float, float | None]:
            b.reset_peak()
            return b.timed(train_step, a.repeats), b.peak_mib()

        b.record("train step, 2 rooms", backend, train_prec, train)


def _prep(tmp: Path, scenes: int, spacing: float) -> str:
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    root = tmp / "scannet"
    write_scannet_dataset(
        root,
        scenes,
        frames=("25k",),
        splits=["val"] * scenes,
        views=3,
        domain=Domain(spacing=spacing),
    )
    out = str(tmp / "feats.zarr")
    cfg = PrepConfig(
        dataset="scannet",
        root=str(root),
        out=out,
        teacher="test_vit_tiny",
        image_size=56,
        voxel_size=0.04,
        reader_options={"frames": "25k"},
    )
    report = run_prep(cfg, progress=False, echo=lambda s: None)
    if report.exit_code:
        raise RuntimeError(f"prep of the benchmark scenes failed: {report.failed}")
    return out


def _checkpoint(tmp: Path, url: str, arch: str) -> Path:
    from tttkd.model.checkpoint import save_checkpoint
    from tttkd.model.minkunet import build_backbone
    from tttkd.model.network import SegKDNet
    from tttkd.pipeline.cache import Cache

    meta = Cache.open(url, read_only=True).meta
    torch.manual_seed(0)
    net = SegKDNet(
        build_backbone(arch, in_channels=3), len(meta.class_names), int(meta.teacher["dim"])
    )
    path = tmp / "random.safetensors"
    save_checkpoint(
        path,
        net,
        label_set=meta.label_set,
        class_names=meta.class_names,
        teacher_spec=meta.teacher,
        config={"bench_gpu": "random weights"},
        backend="torch",
    )
    return path


def bench_adapt(b: Bench, backends: list[str], tmp: Path) -> None:
    """TTT-KD steps and the online stream through ``run_adaptation`` (tttkd-adapt's path)."""
    from tttkd.adapt.config import AdaptConfig
    from tttkd.adapt.runner import run_adaptation

    a = b.args
    url = _prep(tmp, a.scenes, a.spacing)
    ckpt = _checkpoint(tmp, url, a.arch)
    graph_modes = ("off", "on") if b.device.type == "cuda" else ("off",)
    voxels: list[int] = []
    for backend in backends:
        for graphs in graph_modes:

            def ttt(backend=backend, graphs=graphs) -> tuple[float, float | None]:
                step_ms: list[float] = []

                def keep(method, sid, out) -> None:
                    step_ms.extend(out.step_ms[1:])  # steady state: step 0 also warms up
                    voxels.append(int(out.logits.shape[0]))

                cfg = AdaptConfig(
                    methods=("ttt-kd",),
                    steps=a.steps,
                    lr=1e-3,
                    device=str(b.device),
                    backend=backend,
                    cuda_graphs=graphs,
                )
                res = run_adaptation(
                    cfg, url, ckpt, progress=False, echo=lambda s: None, on_scene=keep
                )
                return statistics.median(step_ms), res.timing.get("peak_cuda_mb")

            note = "CUDA graph" if graphs == "on" else "eager"
            b.record("TTT-KD step (tttkd-adapt)", backend, "fp32", ttt, note=note)

        def online(backend=backend) -> tuple[float, float | None]:
            cfg = AdaptConfig(
                methods=("ttt-kd-online",), stride=1, lr=1e-3, device=str(b.device), backend=backend
            )
            res = run_adaptation(cfg, url, ckpt, progress=False, echo=lambda s: None)
            sps = res.methods["ttt-kd-online"]["timing"]["scenes_per_s"]
            return sps, res.timing.get("peak_cuda_mb")

        b.record("TTT-KD-O, stride 1", backend, "fp32", online, unit="scenes/s")
    if voxels:
        print(f"  (adapt scenes: {a.scenes}, {min(voxels)}-{max(voxels)} cached points each)")


def markdown(b: Bench) -> str:
    """The results table with what was measured on what (for benchmarks/RESULTS.md)."""
    gpu = (
        torch.cuda.get_device_name(b.device)
        if b.device.type == "cuda"
        else platform.processor() or "cpu"
    )
    head = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {gpu}",
        "",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"python {platform.python_version()}; "
        f"`python -m benchmarks.bench_gpu {' '.join(b.args.argv)}`; {b.args.arch}, "
        f"{b.args.voxels} voxels requested; ratios: reference ms / ms (higher is faster), "
        f"paper: {PAPER_TTT_MS:.0f} ms / ms.",
        "",
        "| figure | backend | precision | time | vs torch reference | vs paper 177 ms "
        "| peak MiB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines = ["| " + " | ".join(r.cells()) + " |" for r in b.rows]
    return "\n".join(head + lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    p.add_argument("--quick", action="store_true", help="small room and few steps (code path)")
    p.add_argument("--voxels", type=int, default=None, help="room size [60000; quick: 3000]")
    p.add_argument("--arch", default=None, help="backbone [minkunet34c; quick: minkunet_test]")
    p.add_argument("--backends", default="torch,table,spconv", help="comma list to try")
    p.add_argument(
        "--precisions", default=None, help="fwd+bwd precisions [cuda: fp32,bf16; cpu: fp32]"
    )
    p.add_argument("--steps", type=int, default=None, help="TTT steps per scene [30; quick: 3]")
    p.add_argument("--scenes", type=int, default=None, help="synthetic scenes [4; quick: 2]")
    p.add_argument("--spacing", type=float, default=0.02, help="synthetic point spacing (m)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats [10; quick: 2]")
    p.add_argument("--skip-adapt", action="store_true", help="only the in-memory room figures")
    p.add_argument("--skip-network", action="store_true", help="only the tttkd-adapt figures")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    quick = args.quick
    args.voxels = args.voxels or (3000 if quick else 60000)
    args.arch = args.arch or ("minkunet_test" if quick else "minkunet34c")
    args.steps = args.steps or (3 if quick else 30)
    args.scenes = args.scenes or (2 if quick else 4)
    args.repeats = args.repeats or (2 if quick else 10)
    if quick:
        args.spacing = max(args.spacing, 0.05)
    device = torch.device(args.device)
    args.precisions = args.precisions or ("fp32,bf16" if device.type == "cuda" else "fp32")
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device found (torch.cuda.is_available() is False); nothing "
            "measured. Run it on a GPU machine, or `--device cpu --quick` to exercise the code."
        )
        return 0
    b = Bench(device, args)
    backends, refused = _backends(args, device)
    b.rows.extend(refused)
    if not args.skip_network:
        verify_room(b, backends)
        bench_network(b, backends)
    if not args.skip_adapt:
        with tempfile.TemporaryDirectory() as d:
            bench_adapt(b, backends, Path(d))
    table = markdown(b)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
        print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
