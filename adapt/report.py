"""What a run leaves in ``--out``: results.json, results.csv, table.md, PNG plots.

``results.json`` is the single source (resolved config, per-scene and overall metrics,
timings); the CSV, the Markdown table and the plots are derived from it, so
:func:`write_report` also works on a results.json read back from disk.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "format_table",
    "gains_vs_source",
    "without_timings",
    "write_csv",
    "write_json",
    "write_report",
]

_TIMING_KEYS = ("timing", "seconds", "ms_per_step")  # differ between equal runs


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is strict (json.loads elsewhere, jq, browsers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_clean(result), indent=1, allow_nan=False) + "\n")


def without_timings(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as JSON reads it back, less what differs between two equal runs (timings,
    where the cache and checkpoint were): two runs are equal when these are (serial vs
    cluster, resumed vs not)."""

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in _TIMING_KEYS}
        return [strip(v) for v in o] if isinstance(o, list) else o

    out = strip(json.loads(json.dumps(_clean(result))))
    out["cache"].pop("url", None)
    out["checkpoint"].pop("path", None)
    return out


def gains_vs_source(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """method -> scene -> mIoU minus source's mIoU on that scene (only when source ran)."""
    methods = result["methods"]
    if "source" not in methods:
        return {}
    base = methods["source"]["scenes"]
    out: dict[str, dict[str, float]] = {}
    for name, res in methods.items():
        if name == "source":
            continue
        out[name] = {
            sid: rec["miou"] - base[sid]["miou"]
            for sid, rec in res["scenes"].items()
            if rec.get("miou") is not None and base.get(sid, {}).get("miou") is not None
        }
    return out


def write_csv(result: dict[str, Any], path: Path) -> None:
    """One row per (method, scene) plus one ``ALL`` row per method; IoU per scored class."""
    classes = result["evaluation"]["scored_classes"]
    head = [
        "method",
        "scene",
        "miou",
        "accuracy",
        "updated",
        "steps",
        "ms_per_step",
        "fallback",
    ] + [f"iou_{c}" for c in classes]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for name, res in result["methods"].items():
            rows = [("ALL", res["overall"], {})] + [
                (sid, rec, rec) for sid, rec in res["scenes"].items()
            ]
            for sid, scores, rec in rows:
                fb = rec.get("fallback")
                w.writerow(
                    [
                        name,
                        sid,
                        scores.get("miou"),
                        scores.get("accuracy"),
                        rec.get("updated", ""),
                        rec.get("steps", res["timing"]["steps"] if sid == "ALL" else ""),
                        rec.get(
                            "ms_per_step", res["timing"]["ms_per_step"] if sid == "ALL" else ""
                        ),
                        fb["reason"] if fb else "",
                    ]
                    + [scores.get("iou", {}).get(c) for c in classes]
                )


def format_table(result: dict[str, Any]) -> str:
    """Markdown: methods x metrics (mIoU, gain, accuracy, speed, fallbacks), then IoU per class."""
    methods = result["methods"]
    base = methods.get("source", {}).get("overall", {}).get("miou")
    cache, ckpt = result["cache"], result["checkpoint"]
    lines = [
        f"**{ckpt['label_set']} -> {cache['dataset']} ({cache['label_set']})**, "
        f"{len(result['scenes'])} scenes, scored on {len(result['evaluation']['scored_classes'])}"
        " classes",
        "",
        "| method | mIoU | gain vs source | accuracy | ms / TTT step | scenes / s | updates "
        "| fallbacks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in methods.items():
        miou = res["overall"]["miou"]
        gain = (
            "-"
            if base is None or name == "source" or miou is None
            else f"{100 * (miou - base):+.1f}"
        )
        t = res["timing"]
        lines.append(
            f"| {name} | {_pct(miou)} | {gain} | {_pct(res['overall']['accuracy'])} | "
            f"{_num(t['ms_per_step'], '.1f')} | {_num(t['scenes_per_s'], '.2f')} | "
            f"{res['updates']} | {len(res['fallbacks'])} |"
        )
    classes = result["evaluation"]["scored_classes"]
    lines += ["", "| class | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for c in classes:
        cells = [_pct(res["overall"]["iou"].get(c)) for res in methods.values()]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for name, res in methods.items():
        for fb in res["fallbacks"]:
            lines.append(
                f"\n{name}: {fb['scene']} fell back to the unadapted prediction ({fb['reason']})"
            )
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every output file into ``out``; returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "table": out / "table.md",
    }
    write_json(result, paths["json"])
    write_csv(result, paths["csv"])
    paths["table"].write_text(format_table(result))
    if plots:
        from tttkd.adapt.plots import plot_class_iou, plot_scene_gain

        paths["class_iou_png"] = plot_class_iou(result, out / "class_iou.png")
        gain = plot_scene_gain(result, out / "scene_gain.png")
        if gain is not None:
            paths["scene_gain_png"] = gain
    return paths
