"""Print the Markdown table of results/eval/ from the committed raw outputs.

Usage (repository root): python results/eval/summarize.py > results/eval/summary.md
Top-1 is the LAST epoch's test accuracy (no selection on the test set); "best" is shown for reference.
"""

from __future__ import annotations

import json
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
]


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


if __name__ == "__main__":
    main()
