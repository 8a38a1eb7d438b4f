"""``maelab ablate``: pre-train and evaluate every cell of a sweep, resumably.

Layout of a sweep directory::

    sweep.yaml              the sweep file as given (a rerun must resolve to the same cells)
    cells/<cell>/cell.json  the cell's resolved configs
    cells/<cell>/pretrain/  the ``maelab pretrain`` run (linprobe/, knn/, finetune/ likewise)
    cells/<cell>/<stage>.done.json   written when a stage finished (its numbers, wall time)
    cells/<cell>/result.json         written when the cell finished or failed
    cells/<cell>/stdout.log          the cell's output (when run in a subprocess)
    results.csv, results.md, *.png   the report (see :mod:`maelab.ablate.report`)

A rerun skips finished cells, retries failed ones, and continues an interrupted cell from its
first unfinished stage (that stage's half-written directory is removed and redone).

Sweeps share cells: the paper's default (ratio 0.75, random masks, normalized pixels, ...) is a cell
of almost every sweep. Unless ``reuse=False``, a cell whose every stage has the same configuration
as a finished cell of a sibling sweep (another sweep directory under the same parent) takes that
cell's numbers instead of training again; its result.json names the source in ``reused_from``.
Training is deterministic at a fixed seed, so with the same code this changes no number, only the
wall time spent; the most recently finished match is taken, since a cell run by an older maelab may
differ in the last digits where a later commit changed the numerics.
When only some stages agree (a sweep that adds fine-tuning to cells pre-trained before, say), the
pre-training run and every stage configured alike are linked in from the newest such cell and only
the rest runs (:func:`_reuse_finished_stages`).
Turn it off for sweeps whose wall times are compared (mask tokens, equal-time SimMIM vs MAE) so
every cell of the comparison is timed under the same machine load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from maelab.ablate.config import STAGES, Cell, Sweep, load_sweep, resolve_sweep_path
from maelab.evaluate.config import KnnConfig, LinprobeConfig
from maelab.finetune.config import FinetuneConfig
from maelab.pretrain.config import PretrainConfig
from maelab.train.config import from_jsonable, to_jsonable
from maelab.train.rundir import read_json, write_json

logger = logging.getLogger(__name__)

RESULT = "result.json"
LOCK = "ablate.lock"


def run_sweep(spec: str | Path, output_dir: Path | None = None, isolate: bool = True,
              only: tuple[str, ...] = (), reuse: bool = True) -> tuple[Path, int]:
    """Run the sweep's unfinished cells and write the report; returns (sweep dir, failed cell count)."""
    path = resolve_sweep_path(spec)
    sweep = load_sweep(path)
    sweep_dir = Path(output_dir) if output_dir is not None else Path("runs") / "ablate" / sweep.name
    cells = [c for c in sweep.cells if not only or c.name in only or c.label in only]
    if only and not cells:
        raise ValueError(f"--only {', '.join(only)}: no such cell; cells: {', '.join(c.name for c in sweep.cells)}")
    _check_resumable(sweep, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _lock(sweep_dir)
    try:
        shutil.copyfile(path, sweep_dir / "sweep.yaml")  # the file of the latest run (cells are checked above)
        failed = _run_cells(sweep, sweep_dir, cells, isolate, reuse)
    finally:
        (sweep_dir / LOCK).unlink(missing_ok=True)
    logger.info("sweep %s: %d cells, %d not ok; report %s", sweep.name, len(sweep.cells), failed,
                sweep_dir / "results.md")
    return sweep_dir, failed


def _run_cells(sweep: Sweep, sweep_dir: Path, cells: list[Cell], isolate: bool, reuse: bool) -> int:
    from maelab.ablate.report import write_report

    for i, cell in enumerate(cells):
        cell_dir = sweep_dir / "cells" / cell.name
        result = _read_result(cell_dir)
        if result is not None and result["status"] == "ok":
            logger.info("[%d/%d] %s: done earlier, skipped", i + 1, len(cells), cell.name)
            continue
        logger.info("[%d/%d] %s: running", i + 1, len(cells), cell.name)
        cell_dir.mkdir(parents=True, exist_ok=True)
        write_json(cell_dir / "cell.json", cell_to_json(cell))
        (cell_dir / RESULT).unlink(missing_ok=True)
        source = _equal_finished_cell(cell, sweep_dir) if reuse else None
        if source is not None:
            logger.info("[%d/%d] %s: same configuration as %s, its numbers are reused", i + 1, len(cells),
                        cell.name, source)
            write_json(cell_dir / RESULT, {**_read_result(source), "reused_from": str(source)})
            continue
        if reuse and not (cell_dir / "pretrain.done.json").exists():
            _reuse_finished_stages(cell, cell_dir, sweep_dir)
        if isolate:
            _run_subprocess(cell_dir)
        else:
            run_cell(cell_dir)
        result = _read_result(cell_dir)
        status = result["status"] if result else "failed"
        logger.info("[%d/%d] %s: %s", i + 1, len(cells), cell.name, status)
        write_report(sweep, sweep_dir)
    return write_report(sweep, sweep_dir)


def _equal_finished_cell(cell: Cell, sweep_dir: Path) -> Path | None:
    """The newest cell finished ok (and not itself reused) in a sibling sweep directory with the same stage configs."""
    own = sweep_dir.resolve()

    def usable(other: Path) -> bool:
        if other.parent.parent.resolve() == own:
            return False
        result = _read_result(other)
        return result is not None and result.get("status") == "ok" and "reused_from" not in result

    want = _canonical(cell)
    matches = [other for other, saved in _sibling_configs(sweep_dir, usable) if saved == want]
    return max(matches, key=lambda d: (d / RESULT).stat().st_mtime_ns, default=None)


def _sibling_configs(sweep_dir: Path, usable: Callable[[Path], bool]) -> Iterator[tuple[Path, Any]]:
    """(cell directory, canonical stage configs) of each cell of the sweep directories under ``sweep_dir``'s
    parent that ``usable`` accepts; a cell.json that no longer parses (an older maelab's) is skipped."""
    for other in sorted(sweep_dir.parent.glob("*/cells/*")):
        if not (other / "cell.json").is_file() or not usable(other):
            continue
        try:
            yield other, _canonical(cell_from_json(read_json(other / "cell.json")))
        except (ValueError, TypeError, KeyError, OSError):
            continue


def _reuse_finished_stages(cell: Cell, cell_dir: Path, sweep_dir: Path) -> None:
    """Take the finished stages of a cell of any sweep beside this one that pre-trained with the same
    configuration (the newest such run whose checkpoint is still there): its pre-training run, and each
    later stage configured the same. The runs are hard-linked (copied across file systems) into
    ``cell_dir``, so the stages still to run (e.g. a fine-tuning added to a sweep) find the checkpoint
    where they expect it. Each reused stage's numbers carry ``<stage>_reused_from``."""
    own = cell_dir.resolve()

    def usable(other: Path) -> bool:
        return (other.resolve() != own and (other / "pretrain.done.json").is_file()
                and any((other / "pretrain").glob("checkpoint-last*.safetensors")))

    want = _canonical(cell)
    matches = [(other, saved) for other, saved in _sibling_configs(sweep_dir, usable)
               if saved["pretrain"] == want["pretrain"]]
    if not matches:
        return
    source, saved = max(matches, key=lambda m: (m[0] / "pretrain.done.json").stat().st_mtime_ns)
    for stage in STAGES:
        done = source / f"{stage}.done.json"
        if want[stage] is None or saved[stage] != want[stage] or not done.is_file():
            continue
        if (cell_dir / stage).exists():
            shutil.rmtree(cell_dir / stage)
        shutil.copytree(source / stage, cell_dir / stage, symlinks=True, copy_function=_link_or_copy)
        numbers = read_json(done)
        origin = numbers.get(f"{stage}_reused_from", str(source))  # the run that trained it, through any chain
        write_json(cell_dir / f"{stage}.done.json", {**numbers, f"{stage}_reused_from": origin})
        logger.info("%s: %s taken from %s (same configuration)", cell.name, stage, origin)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _canonical(cell: Cell) -> Any:
    """The cell's stage configs with the pre-training model resolved (preset + options), so that an
    option set to the preset's own value equals leaving it unset."""
    from maelab.pretrain.command import resolve_model_and_data
    from maelab.pretrain.config import ModelOptions

    out = _comparable_stages(cell)
    model, data = resolve_model_and_data(cell.pretrain)
    pre = dataclasses.replace(cell.pretrain, options=ModelOptions(), data=data)
    out["pretrain"] = {**to_jsonable(pre), "model": model.to_dict()}
    return _roundtrip(out)


def _lock(sweep_dir: Path) -> None:
    """Refuse a second ``maelab ablate`` on the same directory (both would run the same cells)."""
    path = sweep_dir / LOCK
    if path.exists():
        pid = int(path.read_text().strip() or 0)
        if pid and _alive(pid):
            raise ValueError(f"{sweep_dir} is in use by another maelab ablate (pid {pid}); wait for it or stop it")
    path.write_text(str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cell_to_json(cell: Cell) -> dict[str, Any]:
    return {"name": cell.name, "label": cell.label, "seed": cell.seed, "overrides": cell.overrides,
            **{k: to_jsonable(getattr(cell, k)) for k in STAGES}}


def cell_from_json(data: dict[str, Any]) -> Cell:
    classes = {"pretrain": PretrainConfig, "linprobe": LinprobeConfig, "knn": KnnConfig, "finetune": FinetuneConfig}
    configs = {k: None if data[k] is None else from_jsonable(cls, data[k]) for k, cls in classes.items()}
    return Cell(data["name"], data["label"], data["seed"], data["overrides"], **configs)


def run_cell(cell_dir: Path) -> dict[str, Any]:
    """Run the unfinished stages of the cell in ``cell_dir`` and write result.json (status ok/failed)."""
    cell = cell_from_json(read_json(cell_dir / "cell.json"))
    numbers: dict[str, Any] = {}
    try:
        for stage in STAGES:
            if getattr(cell, stage) is None:
                continue
            done = cell_dir / f"{stage}.done.json"
            if done.exists():
                numbers.update(read_json(done))
                continue
            if (cell_dir / stage).exists():
                logger.info("%s: removing the unfinished %s run", cell.name, stage)
                shutil.rmtree(cell_dir / stage)
            start = time.perf_counter()
            stage_numbers = _STAGE_FNS[stage](cell, cell_dir)
            stage_numbers[f"{stage}_wall_s"] = time.perf_counter() - start
            write_json(done, stage_numbers)
            numbers.update(stage_numbers)
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is recorded, the sweep goes on
        logger.error("cell %s failed: %s", cell.name, exc)
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                  **numbers}
    else:
        result = {"status": "ok", **numbers}
    write_json(cell_dir / RESULT, result)
    return result


def _pretrain(cell: Cell, cell_dir: Path) -> dict[str, Any]:
    from maelab.pretrain.command import pretrain
    from maelab.train.rundir import JsonlLog

    run_dir = pretrain(dataclasses.replace(cell.pretrain, output_dir=cell_dir / "pretrain"))
    epochs = [r for r in JsonlLog(run_dir / "log.jsonl").records() if r.get("event") == "epoch"]
    plan = read_json(run_dir / "config.json").get("plan")  # a time-budgeted cell: its last epoch is partial
    return {"pretrain_loss": epochs[-1]["loss"],
            "pretrain_epochs": round(plan["epochs"], 3) if plan is not None else len(epochs),
            "pretrain_img_per_s": sum(r["img_per_s"] for r in epochs) / len(epochs),
            "pretrain_epoch_time_s": sum(r["epoch_time_s"] for r in epochs)}


def _classifier(stage: str):
    def run(cell: Cell, cell_dir: Path) -> dict[str, Any]:
        if stage == "linprobe":
            from maelab.evaluate.linprobe import linprobe as fn
        else:
            from maelab.finetune.command import finetune as fn
        cfg = dataclasses.replace(getattr(cell, stage), checkpoint=cell_dir / "pretrain", output_dir=cell_dir / stage)
        metrics = read_json(fn(cfg) / "metrics.json")
        # "best" is the epoch with the best validation top-1 (the last one without a validation split). Fine-tuning
        # scores the test split once, for "best": its last epoch has no test number, and the best's stands for it.
        return {f"{stage}_top1": metrics["last"].get("top1", metrics["best"]["top1"]),
                f"{stage}_best_top1": metrics["best"]["top1"],
                f"{stage}_val_top1": metrics["best"].get("val_top1"), f"{stage}_epochs": len(metrics["epochs"])}

    return run


def _knn(cell: Cell, cell_dir: Path) -> dict[str, Any]:
    from maelab.evaluate.knn import run_knn

    cfg = dataclasses.replace(cell.knn, checkpoint=cell_dir / "pretrain", output_dir=cell_dir / "knn")
    record = read_json(run_knn(cfg) / "knn.json")
    return {"knn_top1": record["top1"], "knn_val_top1": record.get("val_top1"),
            "knn_train_images": record["train_images"]}


_STAGE_FNS = {"pretrain": _pretrain, "linprobe": _classifier("linprobe"), "knn": _knn,
              "finetune": _classifier("finetune")}


def _run_subprocess(cell_dir: Path) -> None:
    """One cell in a fresh interpreter: a crash or out-of-memory kill takes only that cell down."""
    with (cell_dir / "stdout.log").open("a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {sys.executable} -m maelab.ablate.runner {cell_dir}\n")
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "maelab.ablate.runner", str(cell_dir)], stdout=log,
                              stderr=subprocess.STDOUT, env=os.environ.copy(), check=False)
    if proc.returncode != 0 and _read_result(cell_dir) is None:
        tail = (cell_dir / "stdout.log").read_text()[-2000:]
        write_json(cell_dir / RESULT, {"status": "failed", "error": f"cell process exited with {proc.returncode}",
                                       "traceback": tail})


def _read_result(cell_dir: Path) -> dict[str, Any] | None:
    path = cell_dir / RESULT
    return read_json(path) if path.exists() else None


def _check_resumable(sweep: Sweep, sweep_dir: Path) -> None:
    """Refuse to mix cells of different configurations in one sweep directory."""
    for cell in sweep.cells:
        saved = sweep_dir / "cells" / cell.name / "cell.json"
        if saved.exists() and not _same_config(read_json(saved), cell):
            raise ValueError(
                f"{sweep_dir}: cell {cell.name} was run with a different configuration than the sweep file now "
                f"gives; choose another --output-dir, or delete {saved.parent} to redo that cell"
            )


def _same_config(saved: dict[str, Any], cell: Cell) -> bool:
    # Compared after rebuilding the saved cell, so a config field added later (with its default) still matches.
    try:
        rebuilt = cell_from_json(saved)
    except (ValueError, TypeError, KeyError):
        return False
    return _comparable_cell(rebuilt) == _comparable_cell(cell)


def _comparable_cell(cell: Cell) -> Any:
    return _roundtrip({**cell_to_json(cell), **_comparable_stages(cell)})


def _comparable_stages(cell: Cell) -> dict[str, Any]:
    """The cell's stage configs as JSON, equal for configs that run the same: sgd's default --blr written out
    (older versions saved it), and without the evaluations' --model, which only names the architecture of
    --init none without a checkpoint (a sweep's evaluations always read the cell's checkpoint; the default
    preset changed under older runs)."""
    stages = {k: getattr(cell, k) for k in STAGES}
    if cell.linprobe is not None:
        stages["linprobe"] = cell.linprobe.with_default_blr()
    out = {k: to_jsonable(v) for k, v in stages.items()}
    for stage in STAGES[1:]:
        if out[stage] is not None:
            out[stage].pop("model", None)
    return out


def _roundtrip(data: dict[str, Any]) -> Any:
    import json

    return json.loads(json.dumps(data, sort_keys=True))


def main() -> int:
    """``python -m maelab.ablate.runner CELL_DIR``: run one cell (how :func:`run_sweep` isolates cells)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    result = run_cell(Path(sys.argv[1]))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
