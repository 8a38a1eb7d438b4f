"""Print each sweep's table (markdown) from the committed cells: planned steps and step time, final loss, probe
and kNN as validation / test, mean ± sample std over the seeds that finished. Validation compares cells; test is
only reported. A cell whose numbers were reused from an identical cell is read from that cell's committed copy.

    python results/ablations_10m/summarize.py [SWEEP ...]    # default: every sweep folder here
"""

import json
import re
import statistics
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
# Where the runs' directories under RUNS were committed (reports are copied without checkpoints).
COMMITTED = {"recipe_final": HERE.parent / "recipe_search" / "final"}
SWEEPS = ("mask_ratio", "mask_ratio_ft", "decoder_depth", "mask_tokens", "target", "mask_sampling")


def committed(run_path: str) -> Path:
    """The committed copy of a cell directory named by its path on the machine that ran it."""
    sweep_dir, cell = Path(run_path).parent.parent.name, Path(run_path).name
    base = COMMITTED.get(sweep_dir, HERE / sweep_dir.removesuffix("_10m"))
    return base / "cells" / cell


def numbers(cell_dir: Path) -> dict | None:
    result_path = cell_dir / "result.json"
    if not result_path.exists():
        return None
    result = json.loads(result_path.read_text())
    if result.get("status") != "ok":
        return None
    source = committed(result["reused_from"]) if "reused_from" in result else cell_dir
    plan = json.loads((source / "pretrain" / "config.json").read_text()).get("plan") or {}
    return {"steps": plan.get("steps"), "step_s": plan.get("step_s"), "loss": result["pretrain_loss"],
            "probe_val": result["linprobe_val_top1"], "probe_test": result["linprobe_top1"],
            "knn_val": result["knn_val_top1"], "knn_test": result["knn_top1"],
            "ft_val": result.get("finetune_val_top1"), "ft_test": result.get("finetune_top1")}


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


def table(sweep: str) -> str:
    default = yaml.safe_load((HERE / f"{sweep}.yaml").read_text())["reference"]  # the default-recipe cell
    cells: dict[str, list[dict]] = {}
    for cell_dir in sorted((HERE / sweep / "cells").glob("*-seed*")):
        name = re.sub(r"-seed\d+$", "", cell_dir.name)
        found = numbers(cell_dir)
        cells.setdefault(name, [])
        if found is not None:
            cells[name].append(found)
    finetuned = any(r["ft_val"] is not None for runs in cells.values() for r in runs)
    head = ["cell", "seeds", "steps", "s per step", "final loss", "probe val", "probe val - default", "probe test",
            "kNN val", "kNN test"]
    head += ["fine-tune val", "fine-tune test (last)"] if finetuned else []
    lines = [f"### {sweep}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, runs in cells.items():
        col = lambda key, digits=2: show([r[key] for r in runs if r[key] is not None], digits)  # noqa: E731
        row = [name, str(len(runs)), col("steps", 0), col("step_s", 3), col("loss", 4), col("probe_val"),
               against_default(runs, cells.get(default, [])), col("probe_test"), col("knn_val"), col("knn_test")]
        row += [col("ft_val"), col("ft_test")] if finetuned else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    chosen = sys.argv[1:] or [s for s in SWEEPS if (HERE / s / "cells").is_dir()]
    print("\n\n".join(table(s) for s in chosen))
