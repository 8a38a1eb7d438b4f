"""Pick the round 1 + 2 cell with the best validation probe; write the final (3 seeds, full split) and digits sweeps.

    python results/recipe_search/make_final.py [RUNS] [OUT]

RUNS (default runs) holds the two rounds' output directories, RUNS/recipe_search and RUNS/round2; final.yaml and
digits.yaml are written to OUT (default results/recipe_search). Prints the ranking.
"""

import json
import sys
from pathlib import Path

RUNS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs")
R = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/recipe_search")
cells = []
for sweep in ("recipe_search", "round2"):
    root = RUNS / sweep / "cells"
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        r = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else {}
        if r.get("status") != "ok":
            continue
        c = json.loads((d / "cell.json").read_text())
        base = {"options.patch_size": 7} if sweep == "round2" else {}
        cells.append((r["linprobe_val_top1"], c["label"], {**base, **c["overrides"]}))
cells.sort(key=lambda t: t[0], reverse=True)
for v, label, o in cells:
    print(f"{v:.2f} {label} {o}")
val, label, overrides = cells[0]
print("winner:", label, overrides)
lines = "".join(f"  {k}: {v}\n" for k, v in overrides.items())
ev = """eval:
  linprobe: {pool: avg, layers: 4}
  knn: {pool: avg, layers: 4}
  finetune: false
"""
(R / "final.yaml").write_text(f"""name: recipe_final
description: >-
  The recipe search's winner on validation ({label}: the best validation probe of rounds 1 and 2) with 3 seeds,
  evaluated on the full training split (54,000 images; validation 6,000; test 10,000 reported once).
base:
  model: mae_vit_fashion
  time_budget: 10m
{lines}{ev}seeds: [0, 1, 2]
cells:
  - {{name: {label}}}
""")
(R / "digits.yaml").write_text(f"""name: recipe_digits
description: >-
  The recipe search's winner ({label}) on a second real image set, scikit-learn's handwritten digits
  (--dataset digits: 1,167 training, 130 validation, 500 test images, upscaled 8x8 -> 28x28), same 10-minute
  budget and evaluation as on Fashion-MNIST.
base:
  model: mae_vit_fashion
  time_budget: 10m
  data.dataset: digits
{lines}{ev}cells:
  - {{name: {label}}}
""")
