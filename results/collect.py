"""Collect maelab output directories into the CSV tables that results/ commits.

    python results/collect.py runs [LABEL=]RUN_DIR ... --output TABLE.csv [--epochs EPOCHS.csv]
    python results/collect.py cells SWEEP_DIR ... --output TABLE.csv [--epochs EPOCHS.csv] [--lookup SWEEP_DIR ...]

`runs`: one row per run directory of `maelab pretrain`, `linprobe`, `finetune` or `knn` (its config.json and
metrics.json, knn.json or log.jsonl); LABEL names the row (default: the directory's name).
`cells`: one row per cell of `maelab ablate` output directories (`cells/NAME/result.json` and the cell's stage
directories). A cell reused from an identically configured cell of another sweep takes its plan and probe C from
that cell, found among the SWEEP_DIRs and --lookup directories by the sweep's run-directory name.
--epochs also writes one row per epoch and run from log.jsonl (loss, epoch time, val and test top-1).

Accuracies are top-1 in percent as the run wrote them (6 decimals); `best_*` is the checkpoint chosen on the
validation split, `last_*` the last epoch, `best_epoch` counts from 1. Checkpoint paths are kept relative to the
runs folder they were read from (the part after `runs/`), so a table names no machine's directories.
The raw directories stay where they ran (RUNS, default `runs/`): results/ keeps the tables only.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

RUN_COLUMNS = (
    "run", "command", "model", "init", "source", "pool", "layers", "whiten", "k", "optimizer", "c", "c_search",
    "train_images", "val_images", "test_images", "val_top1", "test_top1", "best_epoch", "last_val_top1",
    "last_test_top1", "epochs_run", "time_budget", "steps", "planned_epochs", "step_s", "final_loss", "train_time_s",
    "blr", "mixup", "cutmix", "crop_scale", "rand_augment", "reprob", "layer_decay", "drop_path", "smoothing",
)
RESULT_KEYS = (  # maelab ablate's result.json, as the runner wrote them
    "pretrain_wall_s", "pretrain_epochs", "pretrain_loss", "pretrain_img_per_s", "linprobe_val_top1", "linprobe_top1",
    "knn_val_top1", "knn_top1", "finetune_val_top1", "finetune_top1", "finetune_best_top1",
)
CELL_COLUMNS = ("sweep", "cell", "label", "seed", "status", "overrides", "time_budget", "steps", "step_s",
                "planned_epochs", "probe_c", *RESULT_KEYS, "reused_from", "stages_reused", "stages_reused_from")
EPOCH_COLUMNS = ("run", "epoch", "step", "loss", "epoch_time_s", "val_top1", "test_top1")


def num(value: object) -> object:
    """Floats at 6 decimals (the runs' own precision is kept, the noise of float32 formatting is not)."""
    return round(value, 6) if isinstance(value, float) else value


def relative(path: str | None) -> str:
    """A checkpoint path relative to its runs folder: `/any/where/runs/x/y` -> `x/y`."""
    if not path:
        return ""
    match = re.search(r"(?:^|/)runs/(.*)$", path)
    return match.group(1) if match else Path(path).name


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def epochs(run_dir: Path) -> list[dict]:
    """The run's epoch events from log.jsonl."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return []
    events = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return [e for e in events if e.get("event") == "epoch"]


def run_row(label: str, run_dir: Path) -> dict:
    config = read_json(run_dir / "config.json")
    metrics = read_json(run_dir / "metrics.json")
    knn = read_json(run_dir / "knn.json")
    plan = config.get("plan") or {}
    log = epochs(run_dir)
    row: dict = {"run": label, "model": config.get("model"), "init": config.get("init"),
                 "time_budget": config.get("time_budget"), "steps": plan.get("steps"),
                 "planned_epochs": plan.get("epochs"), "step_s": plan.get("step_s"), "epochs_run": len(log) or None}
    if knn:
        row.update(command="knn", model=knn.get("model"), init=knn.get("init"),
                   source=relative(knn.get("source_checkpoint")), pool=knn.get("pool"), layers=knn.get("layers"),
                   whiten=knn.get("whiten"), k=knn.get("k"), train_images=knn.get("train_images"),
                   val_images=knn.get("val_images"), test_images=knn.get("test_images"),
                   val_top1=knn.get("val_top1"), test_top1=knn.get("top1"))
    elif metrics:
        best, last = metrics.get("best") or {}, metrics.get("last") or {}
        row.update(command=metrics.get("command"), model=metrics.get("model"), init=metrics.get("init"),
                   source=relative(metrics.get("source_checkpoint")), pool=metrics.get("pool"),
                   layers=metrics.get("layers"), optimizer=metrics.get("optimizer"), c=metrics.get("c"),
                   train_images=metrics.get("train_images"), val_images=metrics.get("val_images"),
                   test_images=metrics.get("test_images"), val_top1=best.get("val_top1"), test_top1=best.get("top1"),
                   best_epoch=best["epoch"] + 1 if "epoch" in best else None,
                   last_val_top1=last.get("val_top1"), last_test_top1=last.get("top1"),
                   epochs_run=len(metrics.get("epochs") or []) or row["epochs_run"])
        if metrics.get("c_search"):  # C: validation top-1 (L-BFGS iterations), in the order searched
            row["c_search"] = " ".join(f"{s['c']:g}:{s['val_top1']:.4f}({s.get('iterations', '?')})"
                                       for s in metrics["c_search"])
        if metrics.get("command") == "finetune":
            row.update({key: config.get(key) for key in ("mixup", "cutmix", "crop_scale", "rand_augment", "reprob",
                                                         "layer_decay", "drop_path", "smoothing")})
            row["blr"] = (config.get("optim") or {}).get("blr")
    else:  # a pre-training run
        row.update(command="pretrain", model=config.get("model"))
    if log and row["command"] in ("pretrain", "finetune"):
        row["final_loss"] = log[-1].get("loss")
        row["train_time_s"] = sum(e.get("epoch_time_s", 0.0) for e in log)
    return {key: num(row.get(key)) for key in RUN_COLUMNS}


def epoch_rows(label: str, run_dir: Path) -> list[dict]:
    return [{"run": label, "epoch": e["epoch"] + 1, "step": e.get("step"), "loss": num(e.get("loss")),
             "epoch_time_s": num(e.get("epoch_time_s")), "val_top1": num(e.get("val_top1")),
             "test_top1": num(e.get("test_top1"))} for e in epochs(run_dir)]


def sweep_name(sweep_dir: Path) -> str:
    """The sweep's name as its sweep.yaml gives it (maelab ablate's `name:`), else the directory's name."""
    sweep_yaml = sweep_dir / "sweep.yaml"
    if sweep_yaml.is_file():
        match = re.search(r"^name:\s*(\S+)", sweep_yaml.read_text(), re.M)
        if match:
            return match.group(1)
    return sweep_dir.name


def cell_rows(sweep_dir: Path, known: dict[str, Path]) -> tuple[list[dict], list[dict]]:
    rows, epoch_table = [], []
    name = sweep_name(sweep_dir)
    for cell_dir in sorted((sweep_dir / "cells").iterdir()):
        result = read_json(cell_dir / "result.json")
        cell = read_json(cell_dir / "cell.json")
        if not result:
            continue
        source = cell_dir
        if result.get("reused_from"):
            parts = Path(result["reused_from"]).parts  # .../<run dir name>/cells/<cell>
            source = known.get(parts[-3], Path("/nonexistent")) / "cells" / parts[-1]
        plan = read_json(source / "pretrain" / "config.json").get("plan") or {}
        pretrain = cell.get("pretrain") or {}
        overrides = cell.get("overrides") or {}
        reused = [s for s in ("pretrain", "linprobe", "knn", "finetune") if result.get(f"{s}_reused_from")]
        rows.append({
            "sweep": name, "cell": cell_dir.name, "label": cell.get("label"), "seed": cell.get("seed"),
            "status": result.get("status"), "overrides": " ".join(f"{k}={v}" for k, v in overrides.items()),
            "time_budget": pretrain.get("time_budget"), "steps": plan.get("steps"), "step_s": num(plan.get("step_s")),
            "planned_epochs": num(plan.get("epochs")),
            "probe_c": read_json(source / "linprobe" / "metrics.json").get("c"),
            **{key: num(result.get(key)) for key in RESULT_KEYS},
            "reused_from": relative(result.get("reused_from")),
            "stages_reused": " ".join(reused),
            "stages_reused_from": relative(result.get(f"{reused[0]}_reused_from")) if reused else "",
        })
        for stage in ("pretrain", "finetune"):
            epoch_table += [{**e, "run": f"{name}/{cell_dir.name}/{stage}"}
                            for e in epoch_rows("", cell_dir / stage)]
    return rows, epoch_table


def write(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    print(f"wrote {path} ({len(rows)} rows)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("runs", "cells"))
    parser.add_argument("dirs", nargs="+", help="run directories ([LABEL=]DIR) or maelab ablate output directories")
    parser.add_argument("--output", type=Path, required=True, help="the CSV table to write")
    parser.add_argument("--epochs", type=Path, help="also write the per-epoch rows here")
    parser.add_argument("--lookup", nargs="*", default=[], help="sweep directories that reused cells may come from")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d.split("=", 1)[-1]).is_dir()]
    if missing:
        parser.error(f"not a directory (has the run finished?): {' '.join(missing)}")
    if args.kind == "runs":
        pairs = [(d.split("=", 1) if "=" in d else (Path(d).name, d)) for d in args.dirs]
        rows = [run_row(label, Path(d)) for label, d in pairs]
        epoch_table = [e for label, d in pairs for e in epoch_rows(label, Path(d))]
        write(args.output, RUN_COLUMNS, rows)
    else:
        sweeps = [Path(d) for d in args.dirs]
        known = {}
        for d in [*map(Path, args.lookup), *sweeps]:
            known[d.name] = known[sweep_name(d)] = d
        rows, epoch_table = [], []
        for d in sweeps:
            more_rows, more_epochs = cell_rows(d, known)
            rows += more_rows
            epoch_table += more_epochs
        write(args.output, CELL_COLUMNS, rows)
    if args.epochs:
        write(args.epochs, EPOCH_COLUMNS, epoch_table)


if __name__ == "__main__":
    main()
