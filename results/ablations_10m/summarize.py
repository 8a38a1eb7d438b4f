"""Print each sweep's table (markdown) from results.csv: planned steps and step time, final loss, probe and kNN as
validation / test, mean ± sample std over the seeds that finished. Validation compares cells; test is only reported.

    python results/ablations_10m/summarize.py [SWEEP ...]    # default: every sweep in results.csv

results.csv is written by `python results/collect.py cells` from the sweeps' output directories (run.sh does it).
"""

import csv
import re
import statistics
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
SWEEPS = ("mask_ratio", "mask_ratio_ft", "decoder_depth", "mask_tokens", "target", "mask_sampling")


def numbers(row: dict) -> dict | None:
    if row["status"] != "ok":
        return None
    value = lambda key: float(row[key]) if row[key] else None  # noqa: E731
    return {"steps": value("steps"), "step_s": value("step_s"), "loss": value("pretrain_loss"),
            "probe_val": value("linprobe_val_top1"), "probe_test": value("linprobe_top1"),
            "knn_val": value("knn_val_top1"), "knn_test": value("knn_top1"),
            "ft_val": value("finetune_val_top1"), "ft_test": value("finetune_best_top1")}


def show(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def against_default(runs: list[dict], default: list[dict]) -> str:
    """Probe val minus the default cell's, with Welch's two-sided p when both have 2+ seeds (rough at n = 2-3)."""
    if runs is default or not runs or not default:
        return "-"
    diff = statistics.mean(r["probe_val"] for r in runs) - statistics.mean(r["probe_val"] for r in default)
    if len(runs) < 2 or len(default) < 2:
        return f"{diff:+.2f}"
    from scipy.stats import ttest_ind

    p = ttest_ind([r["probe_val"] for r in runs], [r["probe_val"] for r in default], equal_var=False).pvalue
    return f"{diff:+.2f} (p {p:.2f})"


def table(sweep: str, rows: list[dict]) -> str:
    default = yaml.safe_load((HERE / f"{sweep}.yaml").read_text())["reference"]  # the default-recipe cell
    cells: dict[str, list[dict]] = {}
    for row in sorted((r for r in rows if r["sweep"] == f"{sweep}_10m"), key=lambda r: r["cell"]):
        found = numbers(row)
        cells.setdefault(re.sub(r"-seed\d+$", "", row["cell"]), [])
        if found is not None:
            cells[re.sub(r"-seed\d+$", "", row["cell"])].append(found)
    finetuned = any(r["ft_val"] is not None for runs in cells.values() for r in runs)
    head = ["cell", "seeds", "steps", "s per step", "final loss", "probe val", "probe val - default", "probe test",
            "kNN val", "kNN test"]
    head += ["fine-tune val", "fine-tune test (at the best val epoch)"] if finetuned else []
    lines = [f"### {sweep}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, runs in cells.items():
        col = lambda key, digits=2: show([r[key] for r in runs if r[key] is not None], digits)  # noqa: E731
        row = [name, str(len(runs)), col("steps", 0), col("step_s", 3), col("loss", 4), col("probe_val"),
               against_default(runs, cells.get(default, [])), col("probe_test"), col("knn_val"), col("knn_test")]
        row += [col("ft_val"), col("ft_test")] if finetuned else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    with (HERE / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    present = {r["sweep"].removesuffix("_10m") for r in rows}
    chosen = sys.argv[1:] or [s for s in SWEEPS if s in present]
    print("\n\n".join(table(s, rows) for s in chosen))
