"""Sweep files of ``maelab ablate``: YAML -> validated, typed cells.

A sweep file (YAML, read with ``yaml.safe_load``)::

    name: mask_ratio                  # optional; default: the file's stem
    description: Figure 5 ...         # optional, copied into the report
    base:                             # PretrainConfig overrides shared by every cell
      model: mae_vit_fashion
      loop.epochs: 1                  # dotted keys, or nested mappings (loop: {epochs: 1})
                                      # (or time_budget: 10m: each cell plans its steps to train that long;
                                      #  with neither, a cell gets pretrain's default, time_budget: 10m)
    grid:                             # optional: every combination of these values
      options.mask_ratio: [0.5, 0.75]
    cells:                            # optional: named cells (each crossed with the grid)
      - {name: random75, options.mask_strategy: random, seeds: [0, 1, 2]}
    seeds: [0]                        # loop.seed of each cell (a cell's own `seeds` wins)
    reference: random75               # optional: wall-time ratios are relative to this cell
    plot: {x: options.mask_ratio}     # optional: line plot over this key (default: bars per cell)
    eval:
      train_subset: 10000             # linear probe / kNN train images (test split: all)
      linprobe: {loop.epochs: 90}     # LinprobeConfig overrides, or false
      knn: {}                         # KnnConfig overrides, or false
      finetune: false                 # FinetuneConfig overrides to fine-tune each cell

Every cell is validated up front (unknown key, wrong type, bad value, bad model option), so a
typo fails before anything trains; errors name the offending key.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from maelab.evaluate.config import KnnConfig, LinprobeConfig
from maelab.finetune.config import FinetuneConfig
from maelab.pretrain.config import PretrainConfig, with_default_schedule
from maelab.train.config import from_jsonable, to_jsonable

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "sweeps"
TOP_KEYS = {"name", "description", "base", "grid", "cells", "seeds", "reference", "plot", "eval"}
EVAL_KEYS = {"train_subset", "linprobe", "knn", "finetune"}
# Set by ablate itself for each cell.
PRETRAIN_RESERVED = {"output_dir", "loop.seed"}
EVAL_RESERVED = {"output_dir", "checkpoint", "init"}
STAGES = ("pretrain", "linprobe", "knn", "finetune")
"""A cell's runs, in the order they run (each evaluation reads the pre-training checkpoint)."""


@dataclass(frozen=True)
class Cell:
    """One pre-training run of a sweep and the evaluations of its encoder."""

    name: str
    """Unique directory name, e.g. ``mask_ratio=0.75-seed0``."""
    label: str
    """The cell without its seed (seeds of one label are averaged in the report)."""
    seed: int
    overrides: dict[str, Any]
    """The cell's own settings (dotted keys), i.e. what varies across the sweep."""
    pretrain: PretrainConfig
    linprobe: LinprobeConfig | None
    knn: KnnConfig | None
    finetune: FinetuneConfig | None


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    cells: tuple[Cell, ...]
    varying: tuple[str, ...]
    """Dotted keys that differ between cells (the table's columns)."""
    reference: str
    """Label of the cell the wall-time ratios are relative to."""
    plot_x: str | None


def resolve_sweep_path(spec: str | Path) -> Path:
    """A YAML path, or the name of a built-in sweep (``maelab ablate mask_ratio``)."""
    path = Path(spec)
    if path.is_file():
        return path
    builtin = BUILTIN_DIR / f"{spec}.yaml"
    if builtin.is_file():
        return builtin
    names = ", ".join(builtin_sweeps())
    raise ValueError(f"sweep {str(spec)!r}: no such file and no built-in sweep of that name (built-in: {names})")


def builtin_sweeps() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_sweep(spec: str | Path) -> Sweep:
    path = resolve_sweep_path(spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a sweep file is a mapping with at least `base` and `grid` or `cells`")
    try:
        return parse_sweep(raw, default_name=path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def parse_sweep(raw: dict[str, Any], default_name: str = "sweep") -> Sweep:
    """Validate a sweep mapping into typed cells (see the module docstring)."""
    _no_unknown(raw, TOP_KEYS, "top-level key")
    base = flatten(raw.get("base") or {}, "base")
    grid = flatten(raw.get("grid") or {}, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key}: give a non-empty list of values")
    specs = raw.get("cells") or [{}]
    if not isinstance(specs, list) or not all(isinstance(c, dict) for c in specs):
        raise ValueError("cells: give a list of mappings (name + overrides)")
    if not grid and specs == [{}]:
        raise ValueError("the sweep has no cells: add `grid` or `cells`")
    seeds = _seeds(raw.get("seeds", [0]), "seeds")
    ev = _eval_section(raw.get("eval") or {})

    entries: list[tuple[str, list[int], dict[str, Any]]] = []
    for spec in specs:
        spec = dict(spec)
        cell_name = spec.pop("name", None)
        cell_seeds = _seeds(spec.pop("seeds", seeds), f"cells[{cell_name}].seeds")
        own = flatten(spec, f"cells[{cell_name}]")
        for combo in itertools.product(*grid.values()):
            entries.append((_label(cell_name, dict(zip(grid, combo)), own), cell_seeds,
                            {**own, **dict(zip(grid, combo))}))
    # Seed-major order: every cell's first seed runs before any repeat, so a cut-short sweep covers all cells.
    cells = [_build_cell(label, cell_seeds[k], base, varied, ev)
             for k in range(max(len(e[1]) for e in entries))
             for label, cell_seeds, varied in entries if k < len(cell_seeds)]
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"cells {dupes} appear twice; give the cells distinct `name`s")
    varying = tuple(sorted({k for c in cells for k in c.overrides}))
    labels = list(dict.fromkeys(c.label for c in cells))
    reference = raw.get("reference", labels[0])
    if reference not in labels:
        raise ValueError(f"reference: no cell named {reference!r}; cells: {', '.join(labels)}")
    plot = raw.get("plot") or {}
    if not isinstance(plot, dict) or set(plot) - {"x"}:
        raise ValueError("plot: give a mapping {x: DOTTED.KEY}")
    plot_x = plot.get("x")
    if plot_x is not None and plot_x not in varying:
        raise ValueError(f"plot.x: {plot_x!r} is not a key the cells vary (they vary: {', '.join(varying)})")
    return Sweep(str(raw.get("name", default_name)), str(raw.get("description", "")).strip(), tuple(cells),
                 varying, reference, plot_x)


def flatten(mapping: Any, where: str) -> dict[str, Any]:
    """Nested mappings -> dotted keys: {"loop": {"epochs": 1}} -> {"loop.epochs": 1}."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping of config keys, got {mapping!r}")
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flatten(value, f"{where}.{key}").items()})
        else:
            flat[str(key)] = value
    return flat


def apply_overrides(cls: type, overrides: dict[str, Any], where: str, reserved: set[str] = frozenset()) -> Any:
    """``cls()`` with dotted-key ``overrides`` applied, type-checked and rebuilt."""
    data = to_jsonable(cls())
    for key, value in overrides.items():
        if key in reserved:
            raise ValueError(f"{where}.{key}: ablate sets {key} itself; remove it")
        node, hint_cls, parts = data, cls, key.split(".")
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(hint_cls)}
            if part not in fields:
                prefix = ".".join(parts[:i])
                valid = ", ".join(f"{prefix}.{n}" if prefix else n for n in fields)
                raise ValueError(f"{where}.{key}: unknown key {part!r}; valid keys here: {valid}")
            hint = typing.get_type_hints(hint_cls)[part]
            if i < len(parts) - 1:
                if not dataclasses.is_dataclass(hint):
                    raise ValueError(f"{where}.{key}: {'.'.join(parts[:i + 1])} has no sub-keys")
                node, hint_cls = node[part], hint
            else:
                if dataclasses.is_dataclass(hint):
                    example = f"{key}.{dataclasses.fields(hint)[0].name}"
                    raise ValueError(f"{where}.{key}: give one of its sub-keys (e.g. {example})")
                node[part] = check_type(value, hint, f"{where}.{key}")
    try:
        return from_jsonable(cls, data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it fits ``hint`` (ints are accepted as floats); else ValueError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return value
        options = [a for a in args if a is not type(None)]
        for arg in options[:-1]:
            try:
                return check_type(value, arg, where)
            except ValueError:
                pass
        return check_type(value, options[-1], where)  # its error names what the last choice expects
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {value!r}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return value
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint in (int, float, str, bool, Path):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value  # tuples and other containers: checked by the dataclass itself


def _build_cell(label: str, seed: int, base: dict, varied: dict, ev: dict) -> Cell:
    from maelab.pretrain.command import resolve_model_and_data

    where = f"cells[{label}]"
    if "init" in {**base, **varied}:
        raise ValueError(f"{where}.init: a sweep pre-trains every cell from scratch, so that its cells differ only in "
                         "what the grid varies; run `maelab pretrain --init SOURCE` outside ablate instead")
    pre = apply_overrides(PretrainConfig, {**base, **varied}, where, PRETRAIN_RESERVED)
    pre = dataclasses.replace(pre, loop=dataclasses.replace(pre.loop, seed=seed))
    try:  # the schedule as the run will have it: time_budget 10m without loop.epochs, the default warmup
        pre = with_default_schedule(pre)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    resolve_model_and_data(pre)  # the preset accepts the options (e.g. heads divide the decoder width)
    subset = ev["train_subset"]
    evals: dict[str, Any] = {}
    for key, cls in (("linprobe", LinprobeConfig), ("knn", KnnConfig), ("finetune", FinetuneConfig)):
        spec = ev[key]
        if spec is False:
            evals[key] = None
            continue
        cfg = apply_overrides(cls, spec, f"eval.{key}", EVAL_RESERVED)
        if subset is not None and key != "finetune":
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_subset=subset))
        evals[key] = cfg
    return Cell(f"{label}-seed{seed}", label, seed, varied, pre, **evals)


def _eval_section(ev: Any) -> dict[str, Any]:
    if not isinstance(ev, dict):
        raise ValueError("eval: expected a mapping with linprobe / knn / finetune / train_subset")
    _no_unknown(ev, EVAL_KEYS, "eval key")
    out = {"train_subset": ev.get("train_subset")}
    if out["train_subset"] is not None:
        check_type(out["train_subset"], int, "eval.train_subset")
    for key, default in (("linprobe", {}), ("knn", {}), ("finetune", False)):
        spec = ev.get(key, default)
        if spec is True or spec is None:
            spec = {}
        if spec is not False:
            spec = flatten(spec, f"eval.{key}")
        out[key] = spec
    return out


def _seeds(value: Any, where: str) -> list[int]:
    seeds = value if isinstance(value, list) else [value]
    if not seeds or any(type(s) is not int for s in seeds):
        raise ValueError(f"{where}: give a list of integer seeds, e.g. [0, 1, 2]")
    return seeds


def _label(name: str | None, combo: dict[str, Any], own: dict[str, Any]) -> str:
    if name is not None:
        parts = [str(name)] + [f"{k.split('.')[-1]}={v}" for k, v in combo.items()]
    else:
        parts = [f"{k.split('.')[-1]}={v}" for k, v in {**own, **combo}.items()]
    label = "-".join(parts) or "base"
    if any(ch in label for ch in "/\\ ") or label.startswith("."):
        raise ValueError(f"cell name {label!r} must not contain '/', '\\' or spaces; give the cell a `name`")
    return label


def _no_unknown(mapping: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
