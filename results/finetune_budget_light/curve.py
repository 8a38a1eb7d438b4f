"""The light recipe's fine-tuning accuracy against fine-tuning budget (10, 20 and 60 CPU-minutes), each point's
checkpoint-best chosen on validation. Reads results.csv (one row per budget), prints the table and, for each split,
a least-squares line in log2(budget) with where it would reach 93; draws curve.png.

    python results/finetune_budget_light/curve.py
"""

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
POINTS = (  # minutes, the run (where it was first reported), the encoder it fine-tuned
    (10, "finetune_recipe (mae-light-blr2e-3)", "60-minute pre-training, seed 0"),
    (20, "finetune_budget_light (mae-20m)", "60-minute pre-training, seed 1"),
    (60, "finetune_60m_light (mae)", "60-minute pre-training, seed 0"),
)
with (HERE / "results.csv").open() as handle:
    table = {r["run"]: r for r in csv.DictReader(handle)}  # runs named by their budget: 10m, 20m, 60m
rows = []
for minutes, run, encoder in POINTS:
    r = table[f"{minutes}m"]
    rows.append((minutes, int(r["steps"]), float(r["val_top1"]), float(r["test_top1"]), encoder, run))

x = [math.log2(m) for m, *_ in rows]


def fit(y: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b * log2(minutes): (value at 60 minutes, slope per doubling)."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    return my + slope * (math.log2(60) - mx), slope


print("| budget (min) | optimizer steps | val top-1 | test top-1 | encoder | run |")
print("| --- | --- | --- | --- | --- | --- |")
for minutes, steps, val, test, encoder, run in rows:
    print(f"| {minutes} | {steps} | {val:.2f} | {test:.2f} | {encoder} | `{run}` |")
for split, column in (("val", 2), ("test", 3)):
    at60, slope = fit([r[column] for r in rows])
    doublings = (93.0 - at60) / slope
    print(f"{split}: {slope:.2f} points per doubling (line at 60 min: {at60:.2f}); 93 after {doublings:.2f} more "
          f"doublings = {2 ** doublings:.1f} hours of fine-tuning, if the line held")

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot([m for m, *_ in rows], [r[2] for r in rows], marker="o", label="val (chose checkpoint-best)")
ax.plot([m for m, *_ in rows], [r[3] for r in rows], marker="s", label="test (reported)")
ax.set(xscale="log", xlabel="fine-tuning budget (CPU-minutes, log scale)", ylabel="top-1 (%)",
       title="Light recipe: fine-tuning accuracy vs budget")
ax.set_xticks([m for m, *_ in rows], [str(m) for m, *_ in rows])
ax.minorticks_off()
ax.axhline(93, color="grey", ls="--", lw=0.8)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(HERE / "curve.png", dpi=120)
