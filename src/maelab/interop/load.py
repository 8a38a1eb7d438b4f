"""One entry point for every model source maelab reads."""

from __future__ import annotations

from pathlib import Path

from maelab.checkpoint import LAST, load_checkpoint
from maelab.data import DatasetInfo
from maelab.interop.imported import ImportedModel
from maelab.models.mae import MAEConfig, is_decoder_key

SOURCES = "a maelab checkpoint (.safetensors or run directory), an official MAE .pth, or a Hugging Face directory"


class NotPretraining(ValueError):
    """A maelab checkpoint of another kind (e.g. a fine-tuned classifier) where a pre-training one is needed;
    commands reword it with :meth:`for_command`."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        super().__init__(f"{path} is a {kind!r} checkpoint; this needs a pre-training ('mae') checkpoint, or {SOURCES}")

    def for_command(self, command: str) -> ValueError:
        return ValueError(f"{self.path} is a {self.kind!r} checkpoint; {command} needs a pre-training ('mae') "
                          "checkpoint written by `maelab pretrain` (its run directory or checkpoint-last.safetensors)")


def load_source(
    path: Path, target: str | None = None, img_size: int | tuple[int, int] | None = None
) -> ImportedModel:
    """Read any supported model file into maelab keys.

    Args:
        path: a maelab pre-training checkpoint or run directory; an official MAE release
            (``mae_pretrain_vit_*.pth``, ``*_full.pth``, ``mae_visualize_vit_*.pth``); or a
            transformers ``save_pretrained`` directory (ViT-MAE or ViT).
        target: what the decoder predicts, for official files whose name does not say.
        img_size: resample the position embeddings for this input size (another patch grid).
    """
    path = Path(path)
    kind = source_kind(path)
    if kind == "hf":
        from maelab.interop.hf import load_hf

        imported = load_hf(path)
    elif kind == "official":
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        from maelab.interop.official import read_official

        imported = read_official(path, target)
    else:
        imported = _load_maelab(path)
    if target is not None and imported.origin != "official" and target != imported.config.target:
        raise ValueError(
            f"{path} records that it predicts {imported.config.target!r}; --target {target} contradicts it (omit it)"
        )
    if img_size is not None:
        imported = imported.resized(img_size)
    return imported


def source_kind(path: Path) -> str:
    """"hf" (a transformers directory), "official" (a reference-code ``.pth``) or "maelab"."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file() and not (path / f"{LAST}.safetensors").exists():
        return "hf"
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return "official"
    return "maelab"


def _load_maelab(path: Path) -> ImportedModel:
    weights, meta = load_checkpoint(path)
    if meta.kind != "mae":
        raise NotPretraining(path, meta.kind)
    config = MAEConfig.from_dict(meta.model_config)
    raw = dict(meta.data_info or {})
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}) if raw else None
    has_decoder = any(is_decoder_key(k) for k in weights)
    return ImportedModel(path=Path(path), config=config, weights=weights, has_decoder=has_decoder, origin="maelab",
                         target_source="recorded in the checkpoint", data_info=info,
                         data=dict(meta.extra.get("data") or {}), name=str(meta.extra.get("model_name", "mae")))
