"""``tttkd-adapt sweep``: the supplementary's Figure 1 ablations as PNG panels + one CSV.

Panels (each a sweep over one option, every point a full ``run_adaptation``):
``steps`` (a) TTT-KD mIoU gain vs steps; ``images`` (b) mIoU vs images per scene;
``teacher`` (c) source vs TTT-KD per (cache, checkpoint) pair, one pair per teacher;
``stride`` (d) TTT-KD-O mIoU and scenes/s vs stride; ``momentum`` (e) mIoU vs steps, one
curve per momentum. ``source`` is run once per cache (no swept option changes it). Every
point keeps its own results.json under ``runs/``. ``method`` (``--method``) swaps TTT-KD for
another TTT method in ``steps``/``momentum``/``teacher`` (``ttt-mae``), or sweeps
``adacontrast``'s steps per scene (``ac_steps``) in ``steps``. ``lr`` (f) the TTT learning rate.

Tuning must not see the scenes that are reported: ``dev_scenes`` (``--dev-scenes``) runs every
point on a development subset only (listed ids, or a seeded N of the selected scenes) and
writes ``dev_scenes.json`` with that subset and the scenes left to report on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.report import write_json
from tttkd.adapt.runner import run_adaptation

__all__ = [
    "SWEEPS",
    "SweepPoint",
    "TeacherPair",
    "plot_sweeps",
    "run_sweeps",
    "split_dev_scenes",
    "write_sweep_csv",
]

SWEEPS: tuple[str, ...] = ("steps", "images", "teacher", "stride", "momentum", "lr")
SWEEP_METHODS: tuple[str, ...] = ("ttt-kd", "ttt-mae", "adacontrast")
DEFAULT_VALUES: dict[str, tuple[float, ...]] = {
    "steps": (1, 5, 10, 50, 100, 200),
    "images": (1, 2, 5, 10, 20, 50),
    "stride": (1, 2, 5, 10),
    "momentum": (0.0, 0.9),
    "lr": (0.1, 0.3, 1.0),
}


@dataclass(frozen=True)
class TeacherPair:
    """One teacher for panel (c): its cache and the checkpoint trained with it."""

    name: str
    cache: str
    checkpoint: str


@dataclass(frozen=True)
class SweepPoint:
    """One row of sweep.csv."""

    sweep: str
    value: float | str
    method: str
    miou: float | None
    accuracy: float | None
    scenes_per_s: float | None
    ms_per_step: float | None
    momentum: float | None = None
    steps: int | None = None
    teacher: str = ""


def _points(
    sweep: str, value: Any, result: dict, cfg: AdaptConfig, teacher: str
) -> list[SweepPoint]:
    out = []
    for name, res in result["methods"].items():
        t = res["timing"]
        out.append(
            SweepPoint(
                sweep,
                value,
                name,
                res["overall"]["miou"],
                res["overall"]["accuracy"],
                t["scenes_per_s"],
                t["ms_per_step"],
                cfg.momentum,
                cfg.steps,
                teacher,
            )
        )
    return out


def run_sweeps(
    base: AdaptConfig,
    cache: str,
    checkpoint: str,
    out: str | Path,
    sweeps: Sequence[str],
    *,
    values: dict[str, Sequence[float]] | None = None,
    momentum_steps: Sequence[int] = (10, 50, 100),
    teachers: Sequence[TeacherPair] = (),
    echo: Callable[[str], None] = print,
    progress: bool = False,
    method: str = "ttt-kd",
    dev_scenes: Sequence[str] | int | None = None,
    executor: Any = None,
    resume: bool = False,
    overwrite: bool = False,
) -> list[SweepPoint]:
    """Run the requested sweeps; writes ``runs/<sweep>_<value>/results.json`` per point.

    ``dev_scenes``: tune on these scene ids (or a seeded N of the selected scenes) only.
    ``executor``: the Dask cluster every point's scenes run on (``run_adaptation``);
    ``resume``: each point keeps its outcomes in its folder, so a rerun redoes only the rest."""
    out = Path(out)
    if dev_scenes is not None:
        base = base.with_(scenes=tuple(split_dev_scenes(base, cache, dev_scenes, out, echo)))
    values = {**DEFAULT_VALUES, **(values or {})}
    _check_request(sweeps, method, teachers)
    rows: list[SweepPoint] = []
    plan = _plan(base, cache, checkpoint, sweeps, values, momentum_steps, teachers, method)
    for p in plan:  # lazily: a point's config is built when the points before it have run
        echo(f"sweep {p.tag}: {', '.join(p.cfg.methods)}")
        folder = out / "runs" / p.tag
        res = run_adaptation(
            p.cfg,
            p.cache,
            p.checkpoint,
            out=folder if resume else None,
            echo=echo,
            progress=progress,
            executor=executor,
            resume=resume,
            overwrite=overwrite,
        ).to_dict()
        folder.mkdir(parents=True, exist_ok=True)
        write_json(res, folder / "results.json")
        rows += _points(p.sweep, p.value, res, p.cfg, p.teacher)
    write_sweep_csv(rows, out / "sweep.csv")
    plot_sweeps(rows, out)
    return rows


def _check_request(sweeps: Sequence[str], method: str, teachers: Sequence[TeacherPair]) -> None:
    """Refuse unknown sweeps or methods, and sweeps the method or the inputs cannot run."""
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        raise AdaptConfigError(f"unknown sweep(s) {unknown}; choose from {', '.join(SWEEPS)}")
    if method not in SWEEP_METHODS:
        raise AdaptConfigError(f"sweep method {method!r}: choose from {', '.join(SWEEP_METHODS)}")
    only_kd = {"images"} | ({"momentum", "teacher"} if method == "adacontrast" else set())
    if method != "ttt-kd" and only_kd & set(sweeps):
        raise AdaptConfigError(
            f"the {', '.join(sorted(only_kd & set(sweeps)))} sweep(s) apply to ttt-kd only "
            f"here; run them without --method {method}"
        )
    if "teacher" in sweeps and not teachers:
        raise AdaptConfigError("the teacher sweep needs --teacher NAME=CACHE::CHECKPOINT pairs")


@dataclass(frozen=True)
class _Point:
    """One run of a sweep: its folder ``runs/<tag>``, its config and inputs, its csv keys."""

    tag: str
    sweep: str
    value: float | str
    cfg: AdaptConfig
    cache: str
    checkpoint: str
    teacher: str = ""


def _plan(
    base: AdaptConfig,
    cache: str,
    checkpoint: str,
    sweeps: Sequence[str],
    values: dict[str, Sequence[float]],
    momentum_steps: Sequence[int],
    teachers: Sequence[TeacherPair],
    method: str,
) -> Iterator[_Point]:
    """The runs in order: ``source`` once (when a sweep compares with it), then each sweep's."""
    if any(s in sweeps for s in ("steps", "images", "stride", "momentum", "lr")):
        yield _Point("source", "source", "-", base.with_(methods=("source",)), cache, checkpoint)
    for sweep in sweeps:
        if sweep == "teacher":
            for pair in teachers:
                cfg = base.with_(methods=("source", method))
                yield _Point(f"teacher_{pair.name}", "teacher", pair.name, cfg, pair.cache,
                             pair.checkpoint, pair.name)  # fmt: skip
        elif sweep == "momentum":
            for mom in values["momentum"]:
                for steps in momentum_steps:
                    cfg = base.with_(methods=(method,), momentum=float(mom), steps=int(steps))
                    yield _Point(f"momentum_{mom:g}_steps_{steps}", "momentum", float(mom), cfg,
                                 cache, checkpoint)  # fmt: skip
        else:
            for v in values[sweep]:
                cfg = _swept_config(base, sweep, v, method)
                yield _Point(f"{sweep}_{v:g}", sweep, v, cfg, cache, checkpoint)


def _swept_config(base: AdaptConfig, sweep: str, v: float, method: str) -> AdaptConfig:
    """The config of one value of a one-option sweep (steps, images, lr, stride)."""
    if sweep == "steps" and method == "adacontrast":
        return base.with_(methods=(method,), ac_steps=int(v))
    if sweep == "steps":
        return base.with_(methods=(method,), steps=int(v))
    if sweep == "images":
        return base.with_(methods=("ttt-kd",), max_images=int(v))
    if sweep == "lr":
        return base.with_(methods=(method,), lr=float(v))
    return base.with_(methods=("ttt-kd-online",), stride=int(v))  # stride


def split_dev_scenes(
    base: AdaptConfig,
    cache: str,
    dev: Sequence[str] | int,
    out: Path,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """The development scenes (ids, or a seeded ``dev`` of the selected ones); records them
    and the scenes left to report on in ``out/dev_scenes.json``."""
    import numpy as np

    from tttkd.adapt.runner import select_scenes
    from tttkd.pipeline.cache import Cache

    pool = select_scenes(Cache.open(cache, read_only=True), base)
    if isinstance(dev, int):
        if not 1 <= dev < len(pool):
            raise AdaptConfigError(
                f"--dev-scenes {dev}: choose between 1 and {len(pool) - 1} of the "
                f"{len(pool)} selected scenes (the rest are the ones to report)"
            )
        rng = np.random.default_rng(base.seed)
        chosen = sorted(pool[int(i)] for i in rng.choice(len(pool), size=dev, replace=False))
    else:
        chosen = list(dev)
        missing = [s for s in chosen if s not in set(pool)]
        if missing:
            raise AdaptConfigError(
                f"--dev-scenes {missing} are not among the {len(pool)} selected scenes of the "
                f"cache {cache} (--split / --scenes)"
            )
    report = [s for s in pool if s not in set(chosen)]
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json({"dev_scenes": chosen, "report_on": report}, Path(out) / "dev_scenes.json")
    echo(
        f"tuning on {len(chosen)} development scene(s); report on the other {len(report)} "
        f"(listed in {Path(out) / 'dev_scenes.json'}), never on these"
    )
    return chosen


def write_sweep_csv(rows: Sequence[SweepPoint], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(SweepPoint.__dataclass_fields__)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow([getattr(r, n) for n in names])


def plot_sweeps(rows: Sequence[SweepPoint], out: Path) -> Path | None:
    """``figure1.png``: one panel per sweep present in ``rows``; None when there is none."""
    from tttkd.adapt.plots import pyplot

    panels = [s for s in SWEEPS if any(r.sweep == s for r in rows)]
    if not panels:
        return None
    plt = pyplot()
    src = next((r.miou for r in rows if r.sweep == "source" and r.miou is not None), None)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    letters = dict(zip(SWEEPS, "abcdef"))
    for ax, sweep in zip(axes[0], panels):
        pts = [r for r in rows if r.sweep == sweep]
        ax.set_title(f"({letters[sweep]}) {sweep}")
        if sweep == "teacher":
            _teacher_bars(ax, pts)
        elif sweep == "momentum":
            _momentum_curves(ax, pts)
        else:
            _value_curve(ax, sweep, pts, src)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "figure1.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_X_LABELS = {
    "steps": "TTT steps",
    "images": "images per scene",
    "stride": "stride (scenes per update)",
    "lr": "TTT learning rate",
}


def _teacher_bars(ax: Any, pts: list[SweepPoint]) -> None:
    """Panel (c): one bar per (teacher, method)."""
    names = list(dict.fromkeys(r.value for r in pts))
    for j, method in enumerate(dict.fromkeys(r.method for r in pts)):
        vals = [
            100 * next((r.miou or 0 for r in pts if r.value == n and r.method == method), 0)
            for n in names
        ]
        ax.bar([i + 0.4 * j for i in range(len(names))], vals, 0.4, label=method)
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set_ylabel("mIoU (%)")


def _momentum_curves(ax: Any, pts: list[SweepPoint]) -> None:
    """Panel (e): mIoU vs steps, one curve per momentum."""
    for mom in sorted({r.momentum for r in pts}):
        line = sorted((r.steps, 100 * (r.miou or 0)) for r in pts if r.momentum == mom)
        ax.plot(*zip(*line), marker="o", label=f"momentum {mom:g}")
    ax.set_xlabel("TTT steps")
    ax.set_ylabel("mIoU (%)")


def _value_curve(ax: Any, sweep: str, pts: list[SweepPoint], src: float | None) -> None:
    """One-option panels: mIoU (the gain over source for steps) vs the value; the stride
    panel adds scenes/s on a second axis."""
    xs = [float(r.value) for r in pts]
    ys = [100 * (r.miou or 0) for r in pts]
    if sweep == "steps" and src is not None:
        ys = [y - 100 * src for y in ys]
        ax.set_ylabel("mIoU gain over source")
    else:
        ax.set_ylabel("mIoU (%)")
        if src is not None:
            ax.axhline(100 * src, color="gray", ls="--", label="source")
    ax.plot(xs, ys, marker="o", label=pts[0].method if pts else "")
    ax.set_xlabel(_X_LABELS[sweep])
    if sweep == "stride":
        twin = ax.twinx()
        twin.plot(xs, [r.scenes_per_s or 0 for r in pts], color="tab:orange", marker="s")
        twin.set_ylabel("scenes / s", color="tab:orange")
