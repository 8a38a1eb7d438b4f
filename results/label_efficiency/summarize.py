"""Collect the label-efficiency runs into results.csv, a table (stdout, markdown) and label_efficiency.png.

    python results/label_efficiency/summarize.py RUNS/label_efficiency

Each run directory is named ROW-kK-sS (ROW: probe-pixels, ft-mae10m, ...; K: labels per class or "all"; S: the
label seed). Its metrics.json holds the checkpoint chosen on the (small) validation set: its validation top-1
and the test top-1 scored once. The table gives the mean ± std over the label seeds of each row and budget.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
NAME = re.compile(r"^(?P<row>.+)-k(?P<k>\d+|all)-s(?P<seed>\d+)$")
COLUMNS = ("row", "labels_per_class", "label_seed", "train_images", "val_images", "val_top1", "test_top1", "detail")
ROWS = {  # row name -> what the table calls it, in the table's order
    "probe-pixels": "raw pixels, solved linear probe",
    "probe-random": "random-init ViT (same architecture), solved linear probe",
    "probe-mae10m": "MAE 10 min, solved linear probe",
    "ft-vit-scratch": "ViT from scratch, fine-tuning loop",
    "ft-resnet18": "ResNet-18 (timm) from scratch, fine-tuning loop",
    "ft-mae10m": "MAE 10 min, fine-tuned",
}


def read_run(path: Path) -> dict | None:
    match, metrics = NAME.match(path.name), path / "metrics.json"
    if match is None or not metrics.is_file():
        return None
    m = json.loads(metrics.read_text())
    best = m.get("best") or {}
    detail = f"C={m['c']:g}" if "c" in m else f"best epoch {best.get('epoch', '')}"
    return dict(row=match["row"], labels_per_class=match["k"], label_seed=int(match["seed"]),
                train_images=m.get("train_images", ""), val_images=m.get("val_images", ""),
                val_top1=round(best.get("val_top1", float("nan")), 2),
                test_top1=round(best.get("top1", float("nan")), 2),
                detail=detail)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def budget_key(k: str) -> float:
    return float("inf") if k == "all" else float(k)


def main(runs: Path) -> None:
    rows = sorted((r for p in runs.iterdir() if p.is_dir() and (r := read_run(p))),
                  key=lambda r: (r["row"], budget_key(r["labels_per_class"]), r["label_seed"]))
    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["row"], r["labels_per_class"])].append(r)
    budgets = sorted({r["labels_per_class"] for r in rows}, key=budget_key)
    print("| row | " + " | ".join(f"K = {k}: val / test" for k in budgets) + " |")
    print("|---" * (len(budgets) + 1) + "|")
    names = [n for n in ROWS if any(r["row"] == n for r in rows)] + sorted({r["row"] for r in rows} - set(ROWS))
    for name in names:
        out = []
        for k in budgets:
            cell = cells.get((name, k), [])
            out.append(f"{mean_std([c['val_top1'] for c in cell])} / **{mean_std([c['test_top1'] for c in cell])}**"
                       f" ({len(cell)})" if cell else "-")
        print(f"| {ROWS.get(name, name)} | " + " | ".join(out) + " |")
    plot(cells, names, budgets)


def plot(cells: dict, names: list[str], budgets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [k for k in budgets if k != "all"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in names:
        xs = [int(k) for k in numeric if cells.get((name, k))]
        ys = [statistics.mean(c["test_top1"] for c in cells[(name, str(x))]) for x in xs]
        errs = [statistics.stdev(c["test_top1"] for c in cells[(name, str(x))])
                if len(cells[(name, str(x))]) > 1 else 0.0 for x in xs]
        if xs:
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=ROWS.get(name, name))
    ax.set_xscale("log")
    ax.set_xlabel("labeled images per class (K)")
    ax.set_ylabel("Fashion-MNIST test top-1 (%), mean of label draws")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "label_efficiency.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
