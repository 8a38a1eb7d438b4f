"""``maelab pretrain --init SOURCE``: pre-training that starts from another model's weights.

The source is anything :func:`maelab.interop.load_source` reads (a maelab run or checkpoint, an official
``mae_pretrain_vit_*.pth`` / ``*_full.pth`` / ``mae_visualize_vit_*.pth``, a transformers ViT-MAE
directory). It decides the architecture; only what can be carried over to another input changes with
the run's options:

* ``--img-size``: the position tables are resampled to the new patch grid (the fixed sin-cos tables
  recomputed exactly, any other table interpolated);
* ``--channels``: an RGB patch projection is adapted with timm's ``adapt_input_conv``, and a decoder
  that predicts pixels gets its output rows adapted the same way (gray = mean of R, G, B);
* the decoder options, ``--target`` and ``--encoder-mask-tokens``: a decoder that no longer fits is
  initialized fresh, as is the decoder of an encoder-only release; the log names what was.

The patch size, the encoder's width, depth and heads cannot change: another value is a ValueError.
The optimizer and the schedule always start fresh (this is not ``--resume``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

from maelab.checkpoint import resolve_checkpoint
from maelab.interop.imported import ImportedModel
from maelab.interop.load import NotPretraining, load_source, source_kind
from maelab.models import MAEConfig, get_config
from maelab.models.mae import is_decoder_key

logger = logging.getLogger(__name__)

FIXED = ("arch", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
"""Architecture fields the source's weights fix: no option may change them."""
DECODER_FIELDS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "encoder_mask_tokens")
"""Fields that decide whether the source's decoder is the one the run asks for (heads do not show in shapes)."""
PIXEL_TARGETS = ("pixel", "norm_pixel")


@dataclass(frozen=True)
class InitSource:
    """The model a run starts from, and the hash of the file(s) it was read from."""

    model: ImportedModel
    sha256: str


def read_init(path: Path) -> InitSource:
    """Hash and read ``--init``; a maelab checkpoint of another kind (a classifier) is a ValueError."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--init {path} does not exist")
    digest = source_sha256(path)
    try:
        imported = load_source(path)
    except NotPretraining as exc:
        raise exc.for_command("pretrain --init") from None
    logger.info("--init %s: %s model (%d-wide, %d blocks, patch %d, %s, %d channels), %s; sha256 %s", path,
                imported.origin, imported.config.embed_dim, imported.config.depth, imported.config.patch_size,
                "with its decoder" if imported.has_decoder else "encoder only", imported.config.in_chans,
                f"target {imported.config.target!r} ({imported.target_source})", digest)
    return InitSource(imported, digest)


def source_sha256(path: Path) -> str:
    """sha256 of what ``path`` loads from: a checkpoint file (a run directory's newest), an official file,
    or every file of a transformers directory (relative names and contents, in name order)."""
    path = Path(path)
    if source_kind(path) == "maelab":
        files, root = [resolve_checkpoint(path)], None
    elif path.is_dir():
        files, root = sorted(p for p in path.rglob("*") if p.is_file()), path
    else:
        files, root = [path], None
    digest = hashlib.sha256()
    for file in files:
        if root is not None:
            digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def init_architecture(source: MAEConfig, model: str | None, overrides: dict, path: Path) -> MAEConfig:
    """The source's architecture with the run's options applied; ValueError for an option or a ``--model``
    that would change what the weights fix (:data:`FIXED`).

    Raises :class:`~maelab.models.config.InvalidConfig` for an invalid combination, like a preset would.
    """
    if model is not None:
        preset = get_config(model)
        differ = [f"{name} {getattr(preset, name)} vs {getattr(source, name)}" for name in FIXED
                  if getattr(preset, name) != getattr(source, name)]
        if differ:
            raise ValueError(f"--model {model} is another architecture than --init {path} ({', '.join(differ)}); "
                             "leave --model out: with --init the source decides the architecture")
    for name in FIXED:
        if name in overrides and overrides[name] != getattr(source, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {overrides[name]}: --init {path} has {name.replace('_', ' ')} "
                             f"{getattr(source, name)}, which its weights fix; leave {flag} out (or pre-train "
                             "from scratch without --init)")
    chans = overrides.get("in_chans", source.in_chans)
    if chans != source.in_chans and source.in_chans != 3:
        raise ValueError(f"--channels {chans}: --init {path} takes {source.in_chans}-channel images; only an RGB "
                         f"source's patch projection can be adapted to another channel count, so use "
                         f"--channels {source.in_chans} (the data is converted to it)")
    return dataclasses.replace(source, **overrides)


def load_init(model: nn.Module, source: ImportedModel) -> list[str]:
    """Copy ``source``'s weights into ``model`` (built for the run's architecture), adapted as the module
    docstring says; returns the names of the tensors left at ``model``'s fresh initialization."""
    want: MAEConfig = model.config
    weights = adapted_weights(source, want)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    encoder = {k: v for k, v in weights.items() if not is_decoder_key(k)}
    assert {k: tuple(v.shape) for k, v in encoder.items()} == {k: s for k, s in expected.items()
                                                               if not is_decoder_key(k)}, "fixed by init_architecture"
    decoder = {k: v for k, v in weights.items() if is_decoder_key(k)}
    reason = decoder_misfit(source, want, decoder, expected)
    if reason is None:
        encoder.update(decoder)
        if source.config.target != want.target:
            logger.info("--init: the source's decoder predicted %r; it is trained on %r from here",
                        source.config.target, want.target)
    result = model.load_state_dict(encoder, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    missing = set(result.missing_keys)
    fresh = [k for k in expected if k in missing]  # the model's own order, for the log
    # A "pca" target's basis (target_*) is fitted on the run's own patches, not initialized.
    named = [k for k in fresh if not k.startswith("target_")]
    if named:
        logger.info("--init: initialized fresh: %s (%s)", ", ".join(module_names(named)), reason)
    return fresh


def adapted_weights(source: ImportedModel, want: MAEConfig) -> dict[str, torch.Tensor]:
    """The source's tensors for ``want``'s image size and channels."""
    have = source.config
    if want.grid_size != have.grid_size:
        logger.info("--init: position embeddings resampled from the %dx%d to the %dx%d patch grid", *have.grid_size,
                    *want.grid_size)
        source = source.resized(want.img_size)
    weights = dict(source.weights)
    if want.in_chans == have.in_chans:
        return weights
    assert have.in_chans == 3, "init_architecture adapts RGB sources only"
    # timm sums the RGB filters for one channel (a gray image then gets the response of its RGB copy) and
    # repeats them, scaled by 3/C, for C channels.
    weights["patch_embed.proj.weight"] = adapt_input_conv(want.in_chans, weights["patch_embed.proj.weight"])
    logger.info("--init: patch projection adapted from 3 to %d input channels (timm adapt_input_conv)", want.in_chans)
    pred = "decoder_pred.weight"
    if pred in weights and have.target in PIXEL_TARGETS and want.target in PIXEL_TARGETS:
        for key in (pred, "decoder_pred.bias"):
            weights[key] = adapt_pixel_rows(weights[key], want.patch_size, want.in_chans)
        logger.info("--init: decoder output adapted from 3 to %d channels per pixel", want.in_chans)
    return weights


def adapt_pixel_rows(tensor: torch.Tensor, patch: int, chans: int) -> torch.Tensor:
    """The rows of a layer that predicts RGB patches (p*p*3, ...) for ``chans``-channel patches (p*p*chans, ...):
    for one channel the mean of R, G and B (the gray value of the predicted colour), else R, G, B repeated."""
    rgb = tensor.reshape(patch * patch, 3, *tensor.shape[1:])  # (p*p, 3, ...): patchify's channel-last order
    if chans == 1:
        out = rgb.mean(dim=1, keepdim=True)  # (p*p, 1, ...)
    else:
        out = rgb.repeat(1, -(-chans // 3), *([1] * (tensor.ndim - 1)))[:, :chans]  # (p*p, chans, ...)
    return out.reshape(patch * patch * chans, *tensor.shape[1:])  # (p*p*chans, ...)


def decoder_misfit(source: ImportedModel, want: MAEConfig, decoder: dict[str, torch.Tensor],
                   expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why the source's decoder cannot be the run's (None when it can)."""
    if not source.has_decoder:
        return "the source holds the encoder only"
    have = source.config
    if want.arch == "mae":
        changed = [f"{name} {getattr(have, name)} -> {getattr(want, name)}" for name in DECODER_FIELDS
                   if getattr(have, name) != getattr(want, name)]
        if changed:
            return f"the options change the source's decoder: {', '.join(changed)}"
    if have.target != want.target and not (have.target in PIXEL_TARGETS and want.target in PIXEL_TARGETS):
        return f"the source's decoder predicts {have.target!r}, this run {want.target!r}"
    shapes = {k: tuple(v.shape) for k, v in decoder.items()}
    if shapes != {k: s for k, s in expected.items() if is_decoder_key(k)}:
        return "the source's decoder tensors do not fit this run's decoder"
    return None


def module_names(keys: list[str]) -> list[str]:
    """Parameter names grouped by module for a log line: decoder_blocks.0.attn.qkv.weight -> decoder_blocks.0-7."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        top = parts[0]
        index = parts[1] if len(parts) > 2 and parts[1].isdigit() else None
        groups.setdefault(top, [])
        if index is not None and index not in groups[top]:
            groups[top].append(index)
    return [f"{top}.{idx[0]}-{idx[-1]}" if len(idx) > 1 else f"{top}.{idx[0]}" if idx else top
            for top, idx in groups.items()]
