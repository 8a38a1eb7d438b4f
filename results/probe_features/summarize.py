"""Print the feature comparison table (markdown) from results.csv: validation chooses, test is reported.

    python results/probe_features/summarize.py

Rows `patch7-seedS-POOL-lL` are the 10-minute default run's probes (the `avg-l4` ones are its own probe, run by
results/recipe_search/final.yaml); `budget60m-seedS-avg-l6` the 60-minute runs' (results/budget_curve/).
"""

import csv
import statistics
from pathlib import Path

with (Path(__file__).parent / "results.csv").open() as handle:
    RUNS = {r["run"]: r for r in csv.DictReader(handle)}


def cell(values: list[float]) -> str:
    return f"{values[0]:.2f}" if len(values) == 1 else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


print("| features | seeds | C | val top-1 | test top-1 |\n| --- | --- | --- | --- | --- |")
for pool, layers in (("avg", 1), ("avg", 2), ("token", 4), ("avg", 4), ("avg", 5), ("avg", 6)):
    runs = [RUNS[name] for seed in (0, 1, 2) if (name := f"patch7-seed{seed}-{pool}-l{layers}") in RUNS]
    if not runs:
        continue
    name = f"{'mean patch token' if pool == 'avg' else 'cls token'}, last {layers} block{'s' * (layers > 1)}"
    print(f"| {name} | {len(runs)} | {', '.join(format(float(r['c']), 'g') for r in runs)} | "
          f"{cell([float(r['val_top1']) for r in runs])} | {cell([float(r['test_top1']) for r in runs])} |")
