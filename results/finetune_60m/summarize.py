"""Print the fine-tuning pair's table (markdown) from a folder's results.csv and draw its curve.png from epochs.csv:
validation top-1 after each epoch of both arms (the test split chose nothing, so it is not drawn).

    python results/finetune_60m/summarize.py [FOLDER]    # default: this folder; also results/finetune_60m_light
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = (("mae", "MAE (60-minute pre-training, seed 0)"), ("scratch", "random (from scratch)"))
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
with (out / "results.csv").open() as handle:
    runs = {r["run"]: r for r in csv.DictReader(handle)}
with (out / "epochs.csv").open() as handle:
    epochs = list(csv.DictReader(handle))
fig, ax = plt.subplots(figsize=(6, 4))
print("| init | optimizer steps (epochs) | best epoch (on val) | val top-1 | test top-1 | last epoch's val / test |")
print("| --- | --- | --- | --- | --- | --- |")
for arm, name in ARMS:
    if arm not in runs:
        print(f"| {name} | not finished | | | | |")
        continue
    r = runs[arm]
    print(f"| {name} | {r['steps']} ({float(r['planned_epochs']):.1f}) | {r['best_epoch']} | "
          f"{float(r['val_top1']):.2f} | {float(r['test_top1']):.2f} | "
          f"{float(r['last_val_top1']):.2f} / {float(r['last_test_top1']):.2f} |")
    curve = [e for e in epochs if e["run"] == arm]
    ax.plot([int(e["epoch"]) for e in curve], [float(e["val_top1"]) for e in curve], marker=".", label=name)
ax.set(xlabel="epoch of fine-tuning (60 CPU-minutes in all)", ylabel="val top-1 (%)",
       title="Fashion-MNIST fine-tuning at a 60-minute budget")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out / "curve.png", dpi=120)
