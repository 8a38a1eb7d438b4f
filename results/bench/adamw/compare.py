"""Same-process comparison of torch's foreach and fused AdamW on ViT-B MAE's parameters (random grads).

Run: PYTHONPATH=src python results/bench/adamw/compare.py > results/bench/adamw/compare.log
Alternates the two implementations twice (a shared machine's load changes during the run) and prints
the seconds per optimizer step of each round, then the largest parameter difference after 3 steps.
"""

import os
import platform
import time

import torch

from maelab.models import create_model

print(f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"load average {os.getloadavg()}")
model = create_model("mae_vit_base_patch16")
params = [p for p in model.parameters() if p.requires_grad]
for p in params:
    p.grad = torch.randn_like(p)
print(f"parameters: {sum(p.numel() for p in params) / 1e6:.1f} M in {len(params)} tensors")
for round_ in range(2):
    for kind in ("foreach", "fused"):
        opt = torch.optim.AdamW(params, lr=1e-4, **{kind: True})
        opt.step()  # state allocated outside the timing
        start = time.perf_counter()
        for _ in range(5):
            opt.step()
        print(f"round {round_}: {kind:7s} {(time.perf_counter() - start) / 5:.3f} s/step")
a = [p.detach().clone() for p in params[:20]]
b = [p.detach().clone() for p in params[:20]]
for x, y in zip(a, b):
    x.grad = torch.randn_like(x)
    y.grad = x.grad.clone()
opt_a, opt_b = torch.optim.AdamW(a, lr=1e-3, foreach=True), torch.optim.AdamW(b, lr=1e-3, fused=True)
for _ in range(3):
    opt_a.step()
    opt_b.step()
print(f"largest |foreach - fused| after 3 steps: {max((x - y).abs().max().item() for x, y in zip(a, b)):.3g}")
