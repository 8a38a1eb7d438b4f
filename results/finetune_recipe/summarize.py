"""Print the recipe screen's table (markdown) from each arm's metrics.json and config.json: the arms are
compared on the validation split (best epoch's val top-1); the test split is shown, never used to choose."""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
print("| arm | options | optimizer steps (epochs) | best epoch (on val) | val top-1 | test top-1 | last epoch's val / test |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for arm in sorted(p.parent for p in out.glob("*/metrics.json")):
    metrics = json.loads((arm / "metrics.json").read_text())
    config = json.loads((arm / "config.json").read_text())
    plan, best, last = config["plan"], metrics["best"], metrics["last"]
    options = ", ".join(f"{k} {config[k] if config[k] != '' else 'off'}"
                        for k in ("mixup", "cutmix", "crop_scale", "rand_augment", "reprob", "layer_decay")) + f", blr {config['optim']['blr']:g}"
    print(f"| {arm.name} | {options} | {plan['steps']} ({plan['epochs']:.2f}) | {best['epoch'] + 1} | "
          f"{best['val_top1']:.2f} | {best['top1']:.2f} | {last['val_top1']:.2f} / {last['top1']:.2f} |")
