"""``maelab ablate``: a two-cell sweep end to end, resume after an interrupted or failed cell, bad sweep files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from maelab.ablate import runner as ablate
from maelab.ablate.config import builtin_sweeps, load_sweep, parse_sweep
from maelab.ablate.runner import run_sweep
from maelab.cli import main

SWEEP = {
    "name": "tiny",
    "base": {"model": "debug", "data": {"dataset": "synthetic", "synthetic_size": 64},
             "loop": {"epochs": 1, "batch_size": 16}, "optim.warmup_epochs": 0.5, "vis_every": 1},
    "grid": {"options.mask_ratio": [0.5, 0.75]},
    "plot": {"x": "options.mask_ratio"},
    "eval": {"train_subset": 48, "linprobe": {"optimizer": "lars", "loop.epochs": 2, "loop.batch_size": 16},
             "knn": {}},
}
CELLS = ("mask_ratio=0.5-seed0", "mask_ratio=0.75-seed0")


def _write(tmp_path, sweep=SWEEP):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _rows(sweep_dir):
    with (sweep_dir / "results.csv").open() as handle:
        return {row["cell"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-cell sweep (run in-process; the subprocess path is tested separately)."""
    tmp = tmp_path_factory.mktemp("ablate")
    sweep_dir, failed = run_sweep(_write(tmp), tmp / "out", isolate=False)
    assert failed == 0
    return tmp, sweep_dir


def test_two_cell_sweep_writes_table_csv_plot(finished):
    _, sweep_dir = finished
    rows = _rows(sweep_dir)
    assert list(rows) == list(CELLS)
    for name, row in rows.items():
        assert row["status"] == "ok"
        assert 0 <= float(row["linprobe_top1"]) <= 100 and 0 <= float(row["knn_top1"]) <= 100
        assert float(row["pretrain_wall_s"]) > 0 and row["pretrain_epochs"] == "1"
        result = json.loads((sweep_dir / "cells" / name / "result.json").read_text())
        assert result["knn_train_images"] == 48  # eval.train_subset reached kNN
        # The cell's own pre-training run used the cell's mask ratio.
        config = json.loads((sweep_dir / "cells" / name / "pretrain" / "config.json").read_text())
        assert config["options"]["mask_ratio"] == float(row["options.mask_ratio"])
        probe = json.loads((sweep_dir / "cells" / name / "linprobe" / "config.json").read_text())
        assert probe["data"]["train_subset"] == 48 and len(_epochs(sweep_dir / "cells" / name / "linprobe")) == 2
    table = (sweep_dir / "results.md").read_text()
    assert "| mask_ratio=0.75 | 0.75 | 1/1 |" in table
    assert (sweep_dir / "tiny.png").stat().st_size > 0


def _epochs(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
            if json.loads(line).get("event") == "epoch"]


def test_rerun_redoes_only_the_interrupted_stage(finished, tmp_path):
    tmp, sweep_dir = finished
    first, second = (sweep_dir / "cells" / c for c in CELLS)
    # Simulate a kill during the second cell's linear probe: its stage and result markers never got written.
    for marker in ("linprobe.done.json", "knn.done.json", "result.json"):
        (second / marker).unlink()
    (second / "linprobe" / "metrics.json").unlink()
    kept = [first / "result.json", second / "pretrain" / "checkpoint-last.safetensors"]
    kept = {p: p.stat().st_mtime_ns for p in kept}
    _, failed = run_sweep(_write(tmp), sweep_dir, isolate=False)
    assert failed == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # first cell and second pre-training untouched
    assert (second / "linprobe" / "metrics.json").exists() and (second / "result.json").exists()
    assert _rows(sweep_dir)[CELLS[1]]["status"] == "ok"


def test_failed_cell_is_recorded_and_retried(tmp_path, monkeypatch):
    real = ablate._STAGE_FNS["pretrain"]

    def flaky(cell, cell_dir):
        if cell.name == CELLS[0]:
            raise RuntimeError("simulated crash")
        return real(cell, cell_dir)

    monkeypatch.setitem(ablate._STAGE_FNS, "pretrain", flaky)
    path = _write(tmp_path, {**SWEEP, "eval": {"linprobe": False, "knn": {}}})
    sweep_dir, failed = run_sweep(path, tmp_path / "out", isolate=False)
    assert failed == 1
    rows = _rows(sweep_dir)
    assert rows[CELLS[0]]["status"] == "failed" and "simulated crash" in rows[CELLS[0]]["error"]
    assert rows[CELLS[1]]["status"] == "ok"
    assert "simulated crash" in (sweep_dir / "results.md").read_text()
    monkeypatch.undo()  # the crash is gone: a rerun retries the failed cell only
    done = sweep_dir / "cells" / CELLS[1] / "result.json"
    before = done.stat().st_mtime_ns
    assert main(["ablate", str(path), "--output-dir", str(sweep_dir), "--no-isolate"]) == 0
    assert done.stat().st_mtime_ns == before
    assert all(r["status"] == "ok" for r in _rows(sweep_dir).values())


def test_cell_process_that_dies_is_recorded(finished, tmp_path):
    # A cell whose process exits without writing result.json (here: it cannot even read its config).
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    (cell_dir / "cell.json").write_text("{not json")
    ablate._run_subprocess(cell_dir)
    result = json.loads((cell_dir / "result.json").read_text())
    assert result["status"] == "failed" and "exited with" in result["error"]
    assert "JSONDecodeError" in result["traceback"]


def test_changed_sweep_file_refuses_to_mix_results(finished):
    tmp, sweep_dir = finished
    # A cell saved before a config field existed (here: one dropped from its JSON) still matches.
    cell_json = sweep_dir / "cells" / CELLS[0] / "cell.json"
    saved = json.loads(cell_json.read_text())
    del saved["pretrain"]["options"]["loss_on_all"]
    cell_json.write_text(json.dumps(saved))
    assert ablate._same_config(saved, load_sweep(tmp / "sweep.yaml").cells[0])
    changed = {**SWEEP, "base": {**SWEEP["base"], "optim.warmup_epochs": 0.25}}
    with pytest.raises(ValueError, match="different configuration"):
        run_sweep(_write(tmp, changed), sweep_dir, isolate=False)


def test_older_saved_defaults_match_and_real_changes_do_not():
    # Cells saved by older versions wrote sgd's --blr 0.1 out and the old default --model into evaluations
    # that always read the cell's checkpoint: both run the same, so a resumed sweep keeps and reuses them.
    cell = parse_sweep({**SWEEP, "eval": {"linprobe": {}, "knn": {}}}).cells[0]
    saved = ablate.cell_to_json(cell)
    assert saved["linprobe"]["optim"]["blr"] is None
    saved["linprobe"]["optim"]["blr"] = 0.1
    saved["linprobe"]["model"] = saved["knn"]["model"] = "mae_vit_fashion"
    assert ablate._same_config(saved, cell)
    assert ablate._canonical(ablate.cell_from_json(saved)) == ablate._canonical(cell)
    saved["linprobe"]["optim"]["blr"] = 0.2
    assert not ablate._same_config(saved, cell)
    saved["linprobe"]["optim"]["blr"], saved["linprobe"]["layers"] = 0.1, 2
    assert not ablate._same_config(saved, cell)


@pytest.mark.parametrize("change, message", [
    ({"grdi": {}}, "unknown top-level key 'grdi'"),
    ({"base": {"loop.epoch": 1}}, r"loop\.epoch: unknown key 'epoch'; valid keys here: loop\.epochs"),
    ({"grid": {"options.mask_ratio": 0.5}}, "grid.options.mask_ratio: give a non-empty list"),
    ({"base": {"loop": {"epochs": "1"}}}, r"loop\.epochs: expected int, got '1'"),
    ({"grid": {"options.mask_strategy": ["random", "blocks"]}}, "'blocks' is not one of"),
    ({"base": {"output_dir": "x"}}, "ablate sets output_dir itself"),
    ({"base": {"init": "run"}}, r"init: a sweep pre-trains every cell from scratch.*maelab pretrain --init"),
    ({"base": {"options.decoder_embed_dim": 18}}, "does not divide the decoder width --decoder-embed-dim 18"),
    ({"eval": {"linprobe": {"loop.epochs": 0}}}, "eval.linprobe: .*epochs must be at least 1"),
    ({"eval": {"knn": {"checkpoint": "x"}}}, "ablate sets checkpoint itself"),
    ({"plot": {"x": "loop.epochs"}}, "plot.x: 'loop.epochs' is not a key the cells vary"),
    ({"reference": "nope"}, "reference: no cell named 'nope'"),
    ({"grid": {}, "cells": [{"name": "a"}, {"name": "a"}]}, "appear twice"),
    ({"grid": {}}, "the sweep has no cells"),
])
def test_bad_sweep_files_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep({**SWEEP, **change})


def test_cli_bad_sweep_exits_2_before_writing(tmp_path, capsys):
    path = _write(tmp_path, {**SWEEP, "base": {"model": "nope"}})
    assert main(["ablate", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["ablate", "no_such_sweep"]) == 2
    assert "built-in: " in capsys.readouterr().err


@pytest.mark.parametrize("name", builtin_sweeps())
def test_builtin_sweeps_validate(name):
    sweep = load_sweep(name)
    assert sweep.cells and all(c.pretrain.model for c in sweep.cells)


def test_second_ablate_on_a_busy_directory_is_refused(tmp_path):
    sweep_dir = tmp_path / "out"
    sweep_dir.mkdir()
    (sweep_dir / ablate.LOCK).write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(ValueError, match="in use by another maelab ablate"):
        run_sweep(_write(tmp_path), sweep_dir, isolate=False)


def test_identical_cell_of_a_sibling_sweep_is_reused_not_retrained(finished, monkeypatch):
    tmp, sweep_dir = finished
    # A second sweep beside the first: one cell equal to a finished one (mask ratio left at the
    # debug preset's 0.75 there, set explicitly here), one new cell.
    other = {**SWEEP, "name": "other", "grid": {"options.mask_ratio": [0.75, 0.6]}}
    plain = {k: v for k, v in SWEEP.items() if k not in ("grid", "plot")}
    plain = {**plain, "name": "plain", "cells": [{"name": "preset"}]}
    trained = []
    real = ablate._STAGE_FNS["pretrain"]
    monkeypatch.setitem(ablate._STAGE_FNS, "pretrain", lambda cell, d: trained.append(cell.name) or real(cell, d))
    path = tmp / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    other_dir, failed = run_sweep(path, sweep_dir.parent / "other", isolate=False)
    assert failed == 0
    assert trained == ["mask_ratio=0.6-seed0"]
    rows = _rows(other_dir)
    source = _rows(sweep_dir)["mask_ratio=0.75-seed0"]
    assert rows["mask_ratio=0.75-seed0"]["linprobe_top1"] == source["linprobe_top1"]
    assert rows["mask_ratio=0.75-seed0"]["reused_from"].endswith("mask_ratio=0.75-seed0")
    assert not rows["mask_ratio=0.6-seed0"]["reused_from"]
    assert "come from an identically configured cell" in (other_dir / "results.md").read_text()
    plain_path = tmp / "plain.yaml"
    plain_path.write_text(yaml.safe_dump(plain))
    plain_dir, _ = run_sweep(plain_path, sweep_dir.parent / "plain", isolate=False)
    assert trained == ["mask_ratio=0.6-seed0"]
    assert _rows(plain_dir)["preset-seed0"]["linprobe_top1"] == source["linprobe_top1"]
    # With reuse off the cell is trained (the wall-time comparisons need it).
    trained.clear()
    run_sweep(path, sweep_dir.parent / "other-noreuse", isolate=False, only=("mask_ratio=0.75",), reuse=False)
    assert trained == ["mask_ratio=0.75-seed0"]


def test_added_finetune_reuses_the_pretraining_and_evaluations_of_a_sibling(finished, monkeypatch):
    """A sweep that adds fine-tuning to finished cells links their pre-training, linear probe and kNN
    runs in and runs only the fine-tuning, on the linked checkpoint."""
    tmp, sweep_dir = finished
    with_ft = {**SWEEP, "name": "with_ft", "grid": {"options.mask_ratio": [0.75]},
               "eval": {**SWEEP["eval"],
                        "finetune": {"loop.epochs": 1, "loop.batch_size": 16, "data.train_subset": 32}}}
    ran = []
    for stage in ablate.STAGES:
        real = ablate._STAGE_FNS[stage]
        monkeypatch.setitem(ablate._STAGE_FNS, stage,
                            lambda cell, d, real=real, stage=stage: ran.append(stage) or real(cell, d))
    path = tmp / "with_ft.yaml"
    path.write_text(yaml.safe_dump(with_ft))
    out_dir, failed = run_sweep(path, sweep_dir.parent / "with_ft", isolate=False)
    assert failed == 0
    assert ran == ["finetune"]
    row = _rows(out_dir)["mask_ratio=0.75-seed0"]
    assert row["stages_reused"] == "pretrain linprobe knn" and not row["reused_from"]
    # The newest pre-training of that configuration among the sibling sweeps run so far in this module.
    source_dir = Path(row["stages_reused_from"])
    assert source_dir.name == "mask_ratio=0.75-seed0" and source_dir.parent.parent != out_dir
    source = _rows(source_dir.parent.parent)["mask_ratio=0.75-seed0"]
    for key in ("linprobe_top1", "knn_top1", "pretrain_loss", "pretrain_wall_s"):
        assert row[key] == source[key], key
    assert 0 <= float(row["finetune_top1"]) <= 100
    cell = out_dir / "cells" / "mask_ratio=0.75-seed0"
    linked = cell / "pretrain" / "checkpoint-last.safetensors"
    assert linked.read_bytes() == (source_dir / "pretrain" / "checkpoint-last.safetensors").read_bytes()
    assert json.loads((cell / "finetune" / "config.json").read_text())["checkpoint"] == str(cell / "pretrain")
    assert "took these stages" in (out_dir / "results.md").read_text()
    # A rerun skips the finished cell; with reuse off everything trains again.
    ran.clear()
    run_sweep(path, sweep_dir.parent / "with_ft", isolate=False)
    assert ran == []
    run_sweep(path, sweep_dir.parent / "with_ft-noreuse", isolate=False, reuse=False)
    assert ran == list(ablate.STAGES)
