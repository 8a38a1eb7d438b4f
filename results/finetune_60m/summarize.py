"""Print the fine-tuning pair's table (markdown) from each arm's metrics.json and config.json plan, and draw
curve.png: validation top-1 after each epoch of both arms (the test split chose nothing, so it is not drawn)."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = (("mae", "MAE (60-minute pre-training, seed 0)"), ("scratch", "random (from scratch)"))
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
fig, ax = plt.subplots(figsize=(6, 4))
print("| init | optimizer steps (epochs) | best epoch (on val) | val top-1 | test top-1 | last epoch's val / test |")
print("| --- | --- | --- | --- | --- | --- |")
for arm, name in ARMS:
    path = out / arm / "metrics.json"
    if not path.exists():
        print(f"| {name} | not finished | | | | |")
        continue
    metrics = json.loads(path.read_text())
    plan = json.loads((out / arm / "config.json").read_text())["plan"]
    best, last = metrics["best"], metrics["last"]
    print(f"| {name} | {plan['steps']} ({plan['epochs']:.1f}) | {best['epoch'] + 1} | "
          f"{best['val_top1']:.2f} | {best['top1']:.2f} | {last['val_top1']:.2f} / {last['top1']:.2f} |")
    epochs = metrics["epochs"]
    ax.plot([e["epoch"] + 1 for e in epochs], [e["val_top1"] for e in epochs], marker=".", label=name)
ax.set(xlabel="epoch of fine-tuning (60 CPU-minutes in all)", ylabel="val top-1 (%)",
       title="Fashion-MNIST fine-tuning at a 60-minute budget")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out / "curve.png", dpi=120)
