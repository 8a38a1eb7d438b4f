"""Print the feature comparison table (markdown) from the probes' metrics.json: val chooses, test is reported."""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
FINAL = HERE.parent / "recipe_search" / "final" / "cells"  # the default run's own probe: mean token, last 4


def metrics(seed: int, pool: str, layers: int) -> dict | None:
    path = (FINAL / f"patch7-seed{seed}" / "linprobe" if (pool, layers) == ("avg", 4)
            else HERE / f"patch7-seed{seed}-{pool}-l{layers}") / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def cell(values: list[float]) -> str:
    return f"{values[0]:.2f}" if len(values) == 1 else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


print("| features | seeds | C | val top-1 | test top-1 |\n| --- | --- | --- | --- | --- |")
for pool, layers in (("avg", 1), ("avg", 2), ("token", 4), ("avg", 4), ("avg", 5), ("avg", 6)):
    runs = [m for seed in (0, 1, 2) if (m := metrics(seed, pool, layers))]
    name = f"{'mean patch token' if pool == 'avg' else 'cls token'}, last {layers} block{'s' * (layers > 1)}"
    print(f"| {name} | {len(runs)} | {', '.join(format(m['c'], 'g') for m in runs)} | "
          f"{cell([m['best']['val_top1'] for m in runs])} | {cell([m['best']['top1'] for m in runs])} |")
