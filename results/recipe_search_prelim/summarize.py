"""Table of all runs from research/results/*: wall time, img/s, final loss, val accuracies."""
import json
from pathlib import Path

R = Path("/tmp/exp/research/results")
rows = []
for cmd in sorted(R.glob("*.cmd"), key=lambda p: p.stat().st_mtime):
    n = cmd.stem
    if n == "smoke" or (R / f"{n}.ABORTED").exists():
        continue
    run = Path("/tmp/exp/research/runs") / n
    wall = json.loads((R / f"{n}.wall.json").read_text()) if (R / f"{n}.wall.json").exists() else {}
    ep = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in l] if (run / "log.jsonl").exists() else []
    ep = [e for e in ep if e.get("event") == "epoch"]
    steps = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").exists() else []
    ips = [s["img_per_s"] for s in steps if s.get("event") == "step"]
    pj = R / f"{n}.probe.json"
    probe = json.loads(pj.read_text()) if pj.exists() else {}
    val = probe.get("val", {})
    if not val and (R / f"{n}.probe.log").exists():  # probe killed before writing its json: parse its log
        import re
        for line in (R / f"{n}.probe.log").read_text().splitlines():
            m = re.match(r"(\S+)\s+dim\s+(\d+)\s+val logreg ([\d.]+) \(C=([\d.]+).*knn_w ([\d.]+)", line)
            if m:
                val[m[1]] = dict(best_acc=float(m[3]), best_C=float(m[4]), knn_w=float(m[5]))
    flags = cmd.read_text().split("--vis-every 1000", 1)[-1].strip()
    cells = "; ".join(f"{k} {v['best_acc']*100:.2f} (C={v['best_C']:g})" for k, v in val.items())
    knn = "; ".join(f"{k} {v['knn_w']*100:.1f}" for k, v in val.items())
    rows.append(f"| {n} | `{flags}` | {wall.get('train_wall_s', float('nan')):.0f} | "
                f"{(ep[-1]['img_per_s'] if ep else float('nan')):.0f} / {max(ips) if ips else float('nan'):.0f} | "
                f"{(ep[-1]['loss'] if ep else float('nan')):.4f} | {cells} | {knn} |")
    if probe.get("test"):
        rows.append(f"| {n} TEST | | | | | " + "; ".join(
            f"{k} logreg {v['logreg']*100:.2f} (C={v['C']:g}), kNN {v['knn_w']*100:.2f}" for k, v in probe["test"].items()) + " | |")
print("| run | flags | train wall s | img/s epoch mean / best window | final epoch loss | val logreg acc % (C) per feature | val kNN-20 weighted % |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
