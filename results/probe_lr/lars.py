"""A LARS (or SGD) linear probe on cached features, as maelab trains it: BatchNorm without affine + linear,
trunc-normal 0.01 init, momentum 0.9, no weight decay, warmup 10 epochs (scaled to the epoch count) then cosine.
Prints one CSV row per learning rate (lars.csv's columns): val and test top-1 after the last epoch.

    python results/probe_lr/lars.py FEATURES.pt LR[,LR...] [BATCH] [EPOCHS] [lars|sgd]
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import Lars
from torch import nn

from maelab.train.optim import lr_at

torch.set_num_threads(2)
feats = torch.load(sys.argv[1])
OPT = sys.argv[5] if len(sys.argv) > 5 else "lars"
lrs = [float(x) for x in sys.argv[2].split(",")]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 256
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 90
Xtr, ytr = feats["train"]
Xtr = Xtr.float()
D, K, N = Xtr.shape[1], int(ytr.max()) + 1, Xtr.shape[0]
spe = N // batch
for lr in lrs:
    torch.manual_seed(0)
    head = nn.Sequential(nn.BatchNorm1d(D, affine=False, eps=1e-6), nn.Linear(D, K))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    if OPT == "lars":
        opt = Lars([dict(params=[head[1].weight], weight_decay=0.0, always_adapt=True),
                    dict(params=[head[1].bias], weight_decay=0.0, always_adapt=False)], lr=0.0, momentum=0.9)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=0.0, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    step = 0
    for ep in range(epochs):
        head.train()
        perm = torch.randperm(N, generator=g)
        for i in range(spe):
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step / spe, lr, 0.0, 10 * epochs / 90, epochs)
            idx = perm[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(head(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    res = {}
    with torch.no_grad():
        for s in ("val", "test"):
            X, y = feats[s]
            res[s] = round((head(X.float()).argmax(1) == y).float().mean().item() * 100, 2)
        trl = F.cross_entropy(head(Xtr), ytr).item()
    print(f"{Path(sys.argv[1]).stem},{OPT},{lr:g},{batch},{epochs},{step},{trl:.4f},{res['val']},{res['test']},"
          f"{head[1].weight.norm():.2f},{time.time() - t0:.0f}", flush=True)
