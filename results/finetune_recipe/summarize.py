"""Print the recipe screen's table (markdown) from results.csv: the arms are compared on the validation split
(best epoch's val top-1); the test split is shown, never used to choose.

    python results/finetune_recipe/summarize.py [RESULTS_CSV]    # default: results.csv beside this script
"""

import csv
import sys
from pathlib import Path

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.csv"
with path.open() as handle:
    arms = sorted(csv.DictReader(handle), key=lambda r: r["run"])
print("| arm | options | optimizer steps (epochs) | best epoch (on val) | val top-1 | test top-1 "
      "| last epoch's val / test |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for arm in arms:
    options = ", ".join(f"{k} {arm[k] or 'off'}" for k in ("mixup", "cutmix", "crop_scale", "rand_augment", "reprob",
                                                            "layer_decay"))
    options += f", blr {float(arm['blr']):g}"
    print(f"| {arm['run']} | {options} | {arm['steps']} ({float(arm['planned_epochs']):.2f}) | {arm['best_epoch']} | "
          f"{float(arm['val_top1']):.2f} | {float(arm['test_top1']):.2f} | "
          f"{float(arm['last_val_top1']):.2f} / {float(arm['last_test_top1']):.2f} |")
