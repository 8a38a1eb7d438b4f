"""The architecture and objective of a masked image model, as one frozen, JSON-able dataclass
(shared by :mod:`maelab.models.mae`, :mod:`maelab.models.simmim` and the checkpoints' metadata)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from maelab.masking import MASK_STRATEGIES, check_grid_masking, num_visible
from maelab.targets import TARGET_KINDS, default_pca_components, grid_shape, target_dim

ARCHS: tuple[str, ...] = ("mae", "simmim")


class InvalidConfig(ValueError):
    """An architecture that cannot be built. The message names the fields involved; a command line
    rewords it with its own option names (:meth:`render`), so the check lives only here."""

    def __init__(self, problem: str, **fields: object) -> None:
        self.problem, self.fields = problem, fields
        super().__init__(self.render(lambda name, value: f"{name}={value}"))

    def render(self, name_value) -> str:
        """The message with each ``{field}`` shown as ``name_value(field, value)``."""
        return self.problem.format(**{k: name_value(k, v) for k, v in self.fields.items()})


def _multiples(value: int, unit: int) -> str:
    return f"{max(unit, value // unit * unit)} or {(value // unit + 1) * unit}"


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"img_size must be an int or (height, width); got {value!r}")
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class MAEConfig:
    """Architecture and pre-training objective of a Masked Autoencoder."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    target: str = "norm_pixel"
    """Regression target: "pixel", "norm_pixel" (per-patch normalized, the paper's better choice),
    "pca" (coefficients of the leading principal components of standardized patches; the basis is
    fitted on training patches before training and stored in the model) or "hog" (MaskFeat-style
    histograms of oriented gradients of each patch)."""
    pca_components: int | None = None
    """Components kept by the "pca" target; None: 1/8 of the patch dimension (the paper's 96 of
    768), at least 4."""
    loss_on_all: bool = False
    """Ablation: average the loss over all patches instead of masked ones only."""
    mask_ratio: float = 0.75
    mask_strategy: str = "random"
    encoder_mask_tokens: bool = False
    """Ablation (paper Table 1c, SimMIM-style): the encoder sees every patch, masked ones replaced by a learned
    token."""
    arch: str = "mae"
    """"mae", or "simmim" (Xie et al. 2021: the encoder sees every patch, masked ones replaced by a
    learned token, a linear head predicts pixels, L1 loss; the decoder_* fields are unused)."""
    mask_patch_size: int = 2
    """SimMIM only: side of the square mask unit, in patches (masks are drawn on that coarser grid)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size))
        height, width = self.img_size
        patch = self.patch_size
        if patch >= 1 and (height % patch or width % patch):
            side = height if height % patch else width
            raise InvalidConfig(
                f"{{img_size}} is not a multiple of the patch size {patch} (the patch size {patch} must divide "
                f"the image size); allowed: multiples of {patch}, e.g. {_multiples(side, patch)}",
                img_size=height if height == width else self.img_size)
        grid_shape(self.img_size, self.patch_size)
        for name in ("in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be at least 1; got {self.decoder_depth}")
        for dim, heads, what in (
            (self.embed_dim, self.num_heads, ""),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_"),
        ):
            if dim % heads:
                allowed = [h for h in range(1, dim + 1) if dim % h == 0]
                raise InvalidConfig(
                    f"{{{what}num_heads}} does not divide the {(what or 'encoder_')[:-1]} width {{{what}embed_dim}}; "
                    f"allowed head counts for width {dim}: {allowed}",
                    **{f"{what}num_heads": heads, f"{what}embed_dim": dim})
            if dim % 4:
                raise InvalidConfig(
                    f"{{{what}embed_dim}} must be a multiple of 4 (divisible by 4 for the 2-D sin-cos position "
                    f"embedding), e.g. {_multiples(dim, 4)}", **{f"{what}embed_dim": dim})
        if self.target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {', '.join(TARGET_KINDS)}; got {self.target!r}")
        if self.pca_components is not None and not 1 <= self.pca_components <= self.patch_dim:
            raise ValueError(
                f"pca_components must be between 1 and the patch dimension {self.patch_dim}; got {self.pca_components}"
            )
        if self.mask_strategy not in MASK_STRATEGIES:
            raise ValueError(f"mask_strategy must be one of {', '.join(MASK_STRATEGIES)}; got {self.mask_strategy!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.mask_patch_size < 1:
            raise ValueError(f"mask_patch_size must be at least 1 patch; got {self.mask_patch_size}")
        if self.arch == "simmim":
            if self.target not in ("pixel", "norm_pixel"):
                raise ValueError(f"SimMIM predicts pixels: target must be 'pixel' or 'norm_pixel'; got {self.target!r}")
            if self.mask_strategy != "random" or self.encoder_mask_tokens:
                raise ValueError(
                    "SimMIM draws random masks on its coarse grid (mask_patch_size) and always puts mask tokens "
                    "in the encoder: leave mask_strategy 'random' and encoder_mask_tokens False"
                )
        num_visible(self.num_patches, self.mask_ratio)
        if self.mask_strategy == "grid":  # found here, before a run starts, not at its first step
            check_grid_masking(self.grid_size, self.mask_ratio)

    @property
    def grid_size(self) -> tuple[int, int]:
        return grid_shape(self.img_size, self.patch_size)

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.in_chans

    @property
    def num_pca_components(self) -> int:
        """Components the "pca" target keeps (``pca_components`` or its default)."""
        return self.pca_components if self.pca_components is not None else default_pca_components(self.patch_dim)

    @property
    def target_dim(self) -> int:
        """Numbers predicted per patch: p*p*C for pixels, k for PCA, the HOG length for HOG."""
        return target_dim(self.target, self.patch_size, self.in_chans, self.num_pca_components)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["img_size"] = list(self.img_size)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MAE config keys {sorted(unknown)}; was this written by a newer maelab?")
        return cls(**data)
