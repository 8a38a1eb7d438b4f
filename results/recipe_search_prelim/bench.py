"""Relative training speed of candidate configs: img/s of full optimizer steps (random data, AdamW),
median over timed steps. usage: bench.py 'name:model[:k=v,...]:batch' ...  (threads from OMP_NUM_THREADS)
model = mae_vit_fashion or fm_e{dim}_d{depth}_h{heads}_p{patch}; k=v are MAEConfig overrides."""
import re
import statistics
import sys
import time

import torch

from maelab.models import get_config, build_model
from maelab.models.mae import MAEConfig


def cfg_of(model, over):
    m = re.fullmatch(r"fm_e(\d+)_d(\d+)_h(\d+)_p(\d+)", model)
    if m:
        e, d, h, p = map(int, m.groups())
        base = MAEConfig(img_size=(28, 28), patch_size=p, in_chans=1, embed_dim=e, depth=d, num_heads=h,
                         decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    else:
        base = get_config(model)
    import dataclasses
    return dataclasses.replace(base, **over)


for spec in sys.argv[1:]:
    name, model, over, bs = spec.split(":")
    over = {k: (float(v) if "." in v else int(v)) for k, v in (kv.split("=") for kv in over.split(",") if kv)}
    torch.manual_seed(0)
    net = build_model(cfg_of(model, over))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95))
    bs = int(bs)
    x = torch.randn(bs, 1, 28, 28)
    times = []
    for i in range(10):
        t = time.perf_counter()
        out = net(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    print(f"{name:28s} {bs / statistics.median(times):7.0f} img/s  (threads {torch.get_num_threads()})", flush=True)
