"""The report of a sweep: results.csv (one row per cell and seed), results.md (mean and spread over
seeds per cell) and plots (a curve over ``plot.x`` like the paper's Figures 5 and 7, else bars)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from maelab.ablate.config import STAGES, Sweep
from maelab.train.rundir import read_json

METRICS = ("linprobe_top1", "knn_top1", "finetune_top1")
# The same evaluations on the validation split held out of the training images: what comparing cells looks at.
VAL = {metric: metric.replace("_top1", "_val_top1") for metric in METRICS}
NAMES = {"linprobe_top1": "linear probe", "knn_top1": "kNN", "finetune_top1": "fine-tune"}
COLUMNS = ("cell", "label", "seed", "status", "pretrain_wall_s", "pretrain_epochs", "pretrain_loss",
           "pretrain_img_per_s", "linprobe_val_top1", "linprobe_top1", "linprobe_best_top1", "knn_val_top1",
           "knn_top1", "finetune_val_top1", "finetune_top1", "finetune_best_top1", "error", "reused_from",
           "stages_reused", "stages_reused_from")


def collect(sweep: Sweep, sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per cell of the sweep, in sweep order; cells not run yet have status "missing"."""
    rows = []
    for cell in sweep.cells:
        path = sweep_dir / "cells" / cell.name / "result.json"
        result = read_json(path) if path.exists() else {"status": "missing"}
        reused = [s for s in STAGES if result.get(f"{s}_reused_from")]
        if reused:
            result = {**result, "stages_reused": " ".join(reused),
                      "stages_reused_from": result[f"{reused[0]}_reused_from"]}
        rows.append({"cell": cell.name, "label": cell.label, "seed": cell.seed, **cell.overrides, **result})
    return rows


def write_report(sweep: Sweep, sweep_dir: Path) -> int:
    """Write results.csv, results.md and the plots; returns the number of cells not finished ok."""
    rows = collect(sweep, sweep_dir)
    columns = list(COLUMNS[:3]) + list(sweep.varying) + list(COLUMNS[3:])
    with (sweep_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _short(row.get(k)) for k in columns})
    groups = aggregate(rows)
    if sweep.plot_x is not None and all(isinstance(g["first"].get(sweep.plot_x), (int, float)) for g in groups):
        groups.sort(key=lambda g: g["first"][sweep.plot_x])
    (sweep_dir / "results.md").write_text(markdown(sweep, groups, rows))
    _plot(sweep, groups, sweep_dir)
    return sum(row["status"] != "ok" for row in rows)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one label (the seeds of a cell) -> mean, sample std and count of each metric."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["label"], {"label": row["label"], "rows": []})
        group["rows"].append(row)
    for group in groups.values():
        ok = [r for r in group["rows"] if r["status"] == "ok"]
        group["seeds_ok"], group["seeds"] = len(ok), len(group["rows"])
        group["first"] = group["rows"][0]
        for metric in (*METRICS, *VAL.values(), "pretrain_wall_s", "pretrain_loss"):
            values = [r[metric] for r in ok if r.get(metric) is not None]
            group[metric] = _stats(values)
    return list(groups.values())


def markdown(sweep: Sweep, groups: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    ref = next(g for g in groups if g["label"] == sweep.reference)["pretrain_wall_s"]
    lines = [f"# Sweep `{sweep.name}`", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    lines += [f"Mean over seeds (± sample std when there are 2 or more); wall-time ratio relative to "
              f"`{sweep.reference}`. Top-1 as validation / test: the validation split is held out of the "
              "training images and is what a comparison of cells should look at; the test split is only "
              "reported (last epoch; \"-\" where a run predates the validation split).", ""]
    head = ["cell", *[k.split(".")[-1] for k in sweep.varying], "seeds ok", "linear probe", "kNN",
            "fine-tune", "pretrain loss", "pretrain wall (s)", "wall ratio"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for g in groups:
        wall = g["pretrain_wall_s"]
        ratio = f"{wall[0] / ref[0]:.2f}" if wall and ref else "-"
        cells = [g["label"], *[str(g["first"].get(k, "")) for k in sweep.varying], f"{g['seeds_ok']}/{g['seeds']}",
                 *[f"{_fmt(g[VAL[m]])} / {_fmt(g[m])}" if g[m] else "-" for m in METRICS],
                 _fmt(g["pretrain_loss"], 4), _fmt(g["pretrain_wall_s"], 0), ratio]
        lines.append("| " + " | ".join(cells) + " |")
    reused = [r for r in rows if r.get("reused_from")]
    if reused:
        lines += ["", "Cells whose numbers (and wall time) come from an identically configured cell of another sweep:",
                  ""]
        lines += [f"- `{r['cell']}`: `{_sweep_and_cell(r['reused_from'])}`" for r in reused]
    partly = [r for r in rows if r.get("stages_reused") and not r.get("reused_from")]
    if partly:
        lines += ["", "Cells that took these stages (numbers and wall time) from a cell configured the same for them:",
                  ""]
        lines += [f"- `{r['cell']}`: {r['stages_reused'].replace(' ', ', ')} from "
                  f"`{_sweep_and_cell(r['stages_reused_from'])}`" for r in partly]
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "Cells not finished:", ""]
        lines += [f"- `{r['cell']}`: {r['status']}" + (f" ({r['error']})" if r.get("error") else "") for r in bad]
    return "\n".join(lines) + "\n"


def _sweep_and_cell(cell_dir: str) -> str:
    """``<sweep>/<cell>`` of a cell directory ``.../<sweep>/cells/<cell>``."""
    path = Path(cell_dir)
    return f"{path.parent.parent.name}/{path.name}"


def _plot(sweep: Sweep, groups: list[dict[str, Any]], sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The validation split where the runs have one (newer runs), else the test split (runs that predate it).
    split = "validation" if any(g[v] for g in groups for v in VAL.values()) else "test"
    metrics = [VAL[m] if split == "validation" else m for m in METRICS]
    metrics = [m for m in metrics if any(g[m] for g in groups)]
    if not metrics:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    numeric = sweep.plot_x is not None and all(isinstance(g["first"].get(sweep.plot_x), (int, float))
                                               for g in groups)
    for i, metric in enumerate(metrics):
        points = [(g, g[metric]) for g in groups if g[metric]]
        ys = [s[0] for _, s in points]
        errs = [s[1] if not math.isnan(s[1]) else 0.0 for _, s in points]
        if numeric:
            xs = [g["first"][sweep.plot_x] for g, _ in points]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=NAMES[metric.replace("_val", "")])
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        else:
            width = 0.8 / len(metrics)
            xs = [groups.index(g) + (i - (len(metrics) - 1) / 2) * width for g, _ in points]
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=NAMES[metric.replace("_val", "")])
    if numeric:
        ax.set_xlabel(sweep.plot_x.split(".")[-1])
    else:
        ax.set_xticks(range(len(groups)), [g["label"] for g in groups], rotation=20, ha="right", fontsize=8)
        lows = [g[m][0] - 3 for g in groups for m in metrics if g[m]]
        ax.set_ylim(bottom=max(0.0, min(lows)))
    ax.set_ylabel(f"{split} top-1 (%)")
    ax.set_title(f"{sweep.name} (mean over seeds, bars: std)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sweep_dir / f"{sweep.name}.png", dpi=120)
    plt.close(fig)


def _stats(values: list[float]) -> tuple[float, float, int] | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std, len(values)


def _fmt(stats: tuple[float, float, int] | None, digits: int = 2) -> str:
    if stats is None:
        return "-"
    mean, std, _ = stats
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str) and len(value) > 300:
        return value[:300]
    return value
