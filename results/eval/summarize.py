"""Print the Markdown table of results/eval/ from the committed raw outputs.

Usage (repository root): python results/eval/summarize.py > results/eval/summary.md
Top-1 is the LAST epoch's test accuracy (no selection on the test set); "best" is shown for reference.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

HERE = Path(__file__).parent
ROWS = [
    ("linprobe-pixels", "raw pixels (no encoder)", "logistic regression (BN + linear, LARS)"),
    ("knn-pixels", "raw pixels (no encoder)", "kNN (k=20, T=0.07)"),
    ("linprobe-random", "random-init encoder", "linear probe"),
    ("linprobe-mae3", "MAE, 3 epochs (default run)", "linear probe"),
    ("linprobe-mae10", "MAE, 10 epochs", "linear probe"),
    ("knn-mae10", "MAE, 10 epochs", "kNN (k=20, T=0.07)"),
    ("partial-k1", "MAE, 10 epochs", "partial fine-tune, last block"),
    ("partial-k2", "MAE, 10 epochs", "partial fine-tune, last 2 blocks"),
    ("finetune-mae10", "MAE, 10 epochs", "full fine-tune"),
    ("finetune-scratch", "random init (from scratch)", "full fine-tune, same recipe"),
    ("finetune-mae10-nomix", "MAE, 10 epochs", "full fine-tune, no mixup/cutmix"),
    ("finetune-mae10-light", "MAE, 10 epochs", "full fine-tune, light recipe (crop + flip only)"),
]
LINPROBE_TARGET = 88.0
# Independent pre-training runs (each with its own full cosine schedule) that were linearly probed.
PROBED_RUNS = [(3, "linprobe-mae3"), (10, "linprobe-mae10")]


def wall(folder: Path) -> str:
    text = (folder / "machine.txt").read_text() if (folder / "machine.txt").exists() else ""
    found = re.search(r"wall_time_s: (\d+)", text)
    return f"{int(found.group(1)) / 60:.1f}" if found else "-"


def row(name: str, encoder: str, protocol: str) -> str | None:
    folder = HERE / name
    if (folder / "metrics.json").exists():
        m = json.loads((folder / "metrics.json").read_text())
        epochs = m["last"]["epoch"] + 1
        acc = f"{m['last']['top1']:.2f}"
        extra = f"best {m['best']['top1']:.2f} (epoch {m['best']['epoch'] + 1})"
    elif (folder / "knn.json").exists():
        m = json.loads((folder / "knn.json").read_text())
        epochs, acc, extra = "-", f"{m['top1']:.2f}", ""
    else:
        return None
    command = (folder / "command.txt").read_text().strip()
    return f"| {encoder} | {protocol} | {epochs} | **{acc}** | {extra} | {wall(folder)} | `{command}` |"


def main() -> None:
    print("| encoder | protocol | epochs | test top-1 (last) | note | wall (min) | command |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in ROWS:
        line = row(*spec)
        if line:
            print(line)
    pre = HERE / "pretrain-10ep" / "log.jsonl"
    if pre.exists():
        records = [json.loads(x) for x in pre.read_text().splitlines()]
        knn = [(r["epoch"] + 1, r["knn_top1"]) for r in records if r.get("event") == "epoch" and "knn_top1" in r]
        print("\nkNN top-1 during the 10-epoch pre-training (5,000 train / 2,000 test images):",
              ", ".join(f"ep {e}: {a:.1f}" for e, a in knn))
    trend()


def last_top1(name: str) -> float:
    return json.loads((HERE / name / "metrics.json").read_text())["last"]["top1"]


def trend() -> None:
    """Linear-probe accuracy vs pre-training epochs, a log-linear extrapolation, and trend.png."""
    points = [(e, last_top1(n)) for e, n in PROBED_RUNS if (HERE / n / "metrics.json").exists()]
    if len(points) < 2:
        return
    (e0, a0), (e1, a1) = points[0], points[-1]
    per_doubling = (a1 - a0) / math.log2(e1 / e0)
    needed = e1 * 2 ** ((LINPROBE_TARGET - a1) / per_doubling)
    print(f"\nLinear probe vs pre-training epochs: {', '.join(f'{e} ep: {a:.2f}' for e, a in points)}; "
          f"+{per_doubling:.2f} points per doubling of the schedule. Extrapolated log-linearly (two points, "
          f"an estimate, not a measurement), {LINPROBE_TARGET:.0f}% needs about {needed:.0f} pre-training epochs.")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pre = HERE / "pretrain-10ep" / "log.jsonl"
    if pre.exists():
        records = [json.loads(x) for x in pre.read_text().splitlines()]
        knn = [(r["epoch"] + 1, r["knn_top1"]) for r in records if r.get("event") == "epoch" and "knn_top1" in r]
        ax.plot(*zip(*knn), "o-", ms=3, label="kNN during the 10-epoch run (subset)")
    ax.plot(*zip(*points), "s", ms=7, label="linear probe (separate runs)")
    xs = [e1, needed]
    ax.plot(xs, [a1, LINPROBE_TARGET], "--", color="gray", label="log-linear extrapolation")
    ax.axhline(last_top1("linprobe-pixels"), color="tab:red", lw=0.8, label="raw-pixel linear probe")
    ax.axhline(LINPROBE_TARGET, color="black", lw=0.8, ls=":", label="target 88%")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training epochs (log scale)")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "trend.png", dpi=120)


if __name__ == "__main__":
    main()
