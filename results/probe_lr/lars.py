# LARS probe (maelab's recipe: BN(affine=False)+linear, trunc-normal 0.01, momentum 0.9, no wd, warmup 10 then cosine)
# on cached features at several absolute learning rates; prints val/test top-1 at the end.
import sys, math, time, torch, torch.nn.functional as F
from torch import nn
from timm.optim import Lars
from maelab.train.optim import lr_at
torch.set_num_threads(2)
feats = torch.load(sys.argv[1])
OPT = sys.argv[5] if len(sys.argv) > 5 else "lars"
lrs = [float(x) for x in sys.argv[2].split(",")]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 256
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 90
Xtr, ytr = feats["train"]; Xtr = Xtr.float()
D, K, N = Xtr.shape[1], int(ytr.max()) + 1, Xtr.shape[0]
spe = N // batch
for lr in lrs:
    torch.manual_seed(0)
    head = nn.Sequential(nn.BatchNorm1d(D, affine=False, eps=1e-6), nn.Linear(D, K))
    nn.init.trunc_normal_(head[1].weight, std=0.01); nn.init.zeros_(head[1].bias)
    opt = (Lars([dict(params=[head[1].weight], weight_decay=0.0, always_adapt=True),
                dict(params=[head[1].bias], weight_decay=0.0, always_adapt=False)], lr=0.0, momentum=0.9) if OPT == "lars"
           else torch.optim.SGD(head.parameters(), lr=0.0, momentum=0.9))
    g = torch.Generator().manual_seed(0); t0 = time.time(); step = 0
    for ep in range(epochs):
        head.train(); perm = torch.randperm(N, generator=g)
        for i in range(spe):
            for grp in opt.param_groups: grp["lr"] = lr_at(step / spe, lr, 0.0, 10 * epochs / 90, epochs)
            idx = perm[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(head(Xtr[idx]), ytr[idx])
            opt.zero_grad(); loss.backward(); opt.step(); step += 1
    head.eval(); res = {}
    with torch.no_grad():
        for s in ("val", "test"):
            X, y = feats[s]; res[s] = round((head(X.float()).argmax(1) == y).float().mean().item() * 100, 2)
        trl = F.cross_entropy(head(Xtr), ytr).item()
    print(f"{OPT} lr {lr:g} batch {batch} epochs {epochs} steps {step}: train loss {trl:.4f} val {res['val']} test {res['test']} "
          f"|w| {head[1].weight.norm():.2f} ({time.time()-t0:.0f}s)", flush=True)
