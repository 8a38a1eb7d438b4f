#!/usr/bin/env bash
# Block-wise mask sampling's cost, before and after it moved off per-draw torch ops (issue 16 part 5: the block
# cells of results/ablations_10m ran 0.37 s steps against random masking's 0.31 s at the same model).
# 1. `maelab bench`: the default preset's training step with random and with block masking, same process.
# 2. The sampler alone, CPU seconds per batch of 256, the old code (read from git at $OLD) against the new.
# Run on an idle machine; writes next to this script (bench.md / bench.json, sampler.txt, machine.txt).
# Environment: OLD (the commit of the old sampler, default 2fd3cbb), MAELAB and PYTHON (default the repository's
# .venv when there is one, else maelab and python3 from PATH).
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=results/bench/block_mask
OLD=${OLD:-2fd3cbb}
maelab=${MAELAB:-$( [ -x .venv/bin/maelab ] && echo .venv/bin/maelab || echo maelab )}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
{ echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD); old sampler from $OLD"
  echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load: $(cut -d' ' -f1-3 /proc/loadavg)"; } > $here/machine.txt
"$maelab" bench --models fashion --batch-sizes 256 --variants mae block_mask --steps 10 --warmup 2 \
  --output $here/bench
tmp=$(mktemp -d); git show "$OLD:src/maelab/masking.py" > "$tmp/old_masking.py"
"$py" - "$tmp/old_masking.py" <<'PY' 2>&1 | tee $here/sampler.txt
import importlib.util, sys, time
import torch
from maelab.masking import block_masking
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("old_masking", sys.argv[1])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
print("CPU seconds per call, batch 256, mask ratio 0.75 (median of 7)")
for grid in ((4, 4), (14, 14)):
    row = []
    for name, fn in (("old", old.block_masking), ("new", block_masking)):
        gen = torch.Generator().manual_seed(0)
        times = []
        for _ in range(7):
            t = time.process_time(); sample = fn(256, grid, 0.75, gen); times.append(time.process_time() - t)
            assert int(sample.mask.sum(1).min()) == int(sample.mask.sum(1).max())  # the exact count, every sample
        row.append(sorted(times)[3])
    print(f"grid {grid[0]}x{grid[1]}: old {row[0]:.4f} s, new {row[1]:.4f} s, {row[0] / row[1]:.1f}x faster")
PY
