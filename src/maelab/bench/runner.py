"""``maelab bench``: pre-training throughput, FLOPs, MFU and memory, measured in one run.

Every case times whole optimizer steps (forward + backward + fused AdamW) on random images
already on the device, so it measures the model and optimizer, not the data path (the loader
is measured separately, see :mod:`maelab.bench.loader`). MFU is the achieved analytic
FLOP/s divided by the dense matmul peak measured *in the same process* on the same device, so
it stays meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from maelab.bench.config import BenchConfig, resolve_model
from maelab.bench.flops import encoder_flops, mae_flops
from maelab.bench.report import markdown_report, ratios
from maelab.models import MAEConfig, MaskedAutoencoder, get_config
from maelab.train.config import OptimConfig, changed_options
from maelab.train.environment import resolve_device
from maelab.train.optim import build_adamw, set_lr
from maelab.train.rundir import write_json

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Case:
    """One measured setting: a model config plus how it is run."""

    model: str
    batch_size: int
    variant: str
    config: MAEConfig
    compile: bool = False
    amp: torch.dtype | None = None
    grad_ckpt: bool = False


def variant_case(model: str, batch: int, variant: str, device: torch.device) -> tuple[Case | None, str | None]:
    """The case for ``variant`` of ``model``, or (None, why it is skipped)."""
    cfg = get_config(model)
    changes: dict = {}
    if variant == "mask_tokens":
        changes["config"] = dataclasses.replace(cfg, encoder_mask_tokens=True)
    elif variant in ("decoder1", "decoder8"):
        depth = int(variant.removeprefix("decoder"))
        if depth == cfg.decoder_depth:
            return None, f"the preset's decoder already has {depth} blocks: same as 'mae'"
        changes["config"] = dataclasses.replace(cfg, decoder_depth=depth)
    elif variant == "block_mask":
        changes["config"] = dataclasses.replace(cfg, mask_strategy="block")
    elif variant == "compile":
        changes["compile"] = True
    elif variant == "bf16":
        if device.type != "cuda":
            return None, "bf16 autocast is measured on GPUs only: most CPUs have no fast bf16 matmul path"
        changes["amp"] = torch.bfloat16
    elif variant == "grad_ckpt":
        changes["grad_ckpt"] = True
    return Case(model=model, batch_size=batch, variant=variant, config=changes.pop("config", cfg), **changes), None


# ---------------------------------------------------------------------------------------------- timing helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], None], n: int, device: torch.device) -> list[float]:
    """Wall seconds of ``n`` calls of ``fn``, each synchronized with the device."""
    times = []
    for _ in range(n):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_operands(device: torch.device, size: int, dtype: torch.dtype = torch.float32) -> tuple:
    """Two random (size x size) matrices; GPUs use at least 8192 to reach their peak."""
    if device.type == "cuda":
        size = max(size, 8192)
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)  # (n, n)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)  # (n, n)
    return a, b


def matmul_flops_per_s(size: int, seconds: float) -> float:
    return 2 * size**3 / seconds


def matmul_peak(device: torch.device, size: int, dtype: torch.dtype = torch.float32, reps: int = 5) -> dict:
    """Best FLOP/s of a dense (n x n) @ (n x n) matmul in ``dtype`` (2 n^3 FLOPs)."""
    a, b = matmul_operands(device, size, dtype)
    times = time_calls(lambda: torch.mm(a, b), reps + 1, device)[1:]
    return {"dtype": str(dtype).removeprefix("torch."), "size": a.shape[0], "seconds": times,
            "flops_per_s": matmul_flops_per_s(a.shape[0], min(times))}


class MemoryMeter:
    """Peak memory over a region: CUDA max allocated, or the process's peak RSS (Linux VmHWM, reset per region)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # Writing 5 resets the peak RSS counter (Linux >= 4.0); elsewhere the peak is since start.
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        status = Path("/proc/self/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "process_peak_rss"


# ---------------------------------------------------------------------------------------------- one case
def run_case(case: Case, cfg: BenchConfig, device: torch.device, peaks: dict[str, float]) -> dict:
    """Measure one case; returns its JSON record."""
    torch.manual_seed(0)
    model = MaskedAutoencoder(case.config).to(device)
    model.set_grad_checkpointing(case.grad_ckpt)
    optimizer = build_adamw(model, OptimConfig())
    set_lr(optimizer, 1e-4)
    if case.compile:
        # Compiling each block (not the whole forward) keeps the mask sampling, with its Generator, eager
        # and gives the encoder and decoder one graph per token count.
        for block in (*model.blocks, *model.decoder_blocks):
            block.compile()
    c = case.config
    gen = torch.Generator(device).manual_seed(0)
    imgs = torch.randn(case.batch_size, c.in_chans, *c.img_size, device=device, generator=gen)  # (B, C, H, W)
    amp = dict(device_type=device.type, dtype=case.amp or torch.float32, enabled=case.amp is not None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            out = model(imgs, generator=gen)
        out.loss.backward()
        optimizer.step()

    memory = MemoryMeter(device)
    model.train()
    warm = time_calls(step, cfg.warmup, device)
    # Each timed step is paired with a matmul timed just before it: on a shared machine the load changes
    # from second to second, and the per-step ratio (``mfu_paired``) sees the same load on both sides.
    a, b = matmul_operands(device, cfg.matmul_size, case.amp or torch.float32)
    operands_mb = (a.nbytes + b.nbytes) / 2**20
    times, mm_times, peaks_mb = [], [], []
    for _ in range(cfg.steps):
        mm_times += time_calls(lambda: torch.mm(a, b), 1, device)
        memory.reset()  # after the matmul, whose output is freed: the peak is the step's own
        times += time_calls(step, 1, device)
        peaks_mb.append(memory.peak_mb() - operands_mb)
    peak = max(peaks_mb)
    mm_size = a.shape[0]
    median = statistics.median(times)
    flops = mae_flops(c)
    dtype = "bfloat16" if case.amp is not None else "float32"
    achieved = flops.train_step * case.batch_size / median
    record = dict(
        model=case.model, batch_size=case.batch_size, variant=case.variant, dtype=dtype,
        compile=case.compile, grad_ckpt=case.grad_ckpt, encoder_mask_tokens=c.encoder_mask_tokens,
        mask_strategy=c.mask_strategy, mask_ratio=c.mask_ratio, decoder_depth=c.decoder_depth,
        encoder_tokens=flops.encoder_tokens,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        flops_per_image=dict(forward=flops.forward, train_step=flops.train_step,
                             **{k: getattr(flops, k) for k in ("patch_embed", "encoder", "decoder_embed",
                                                                "decoder", "pred_head")}),
        warmup_s=warm, step_s=times, median_step_s=median, img_per_s=case.batch_size / median,
        achieved_flops_per_s=achieved, mfu=achieved / peaks[dtype] if dtype in peaks else None,
        matmul_paired_s=mm_times,
        mfu_paired=statistics.median(flops.train_step * case.batch_size / t / matmul_flops_per_s(mm_size, m)
                                     for t, m in zip(times, mm_times)),
        peak_memory_mb=peak, memory_kind=memory.kind,
    )
    if case.variant in ("mae", "compile", "bf16"):
        record.update(_inference(model, case, cfg, device, amp, peaks.get(dtype)))
    logger.info("%s b=%d %s: %.2f img/s, MFU %s, peak %.0f MB", case.model, case.batch_size, case.variant,
                record["img_per_s"], f"{record['mfu']:.1%}" if record["mfu"] is not None else "n/a", peak)
    return record


def _inference(model: MaskedAutoencoder, case: Case, cfg: BenchConfig, device: torch.device, amp: dict,
               peak: float | None) -> dict:
    """Encoder-only throughput on every patch (feature extraction / classification), no grad."""
    c = case.config
    imgs = torch.randn(case.batch_size, c.in_chans, *c.img_size, device=device)  # (B, C, H, W)
    model.eval()

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(**amp):
            model.forward_encoder(imgs)

    time_calls(forward, max(cfg.warmup, 1), device)
    median = statistics.median(time_calls(forward, cfg.steps, device))
    achieved = encoder_flops(c) * case.batch_size / median
    return dict(inference_img_per_s=case.batch_size / median, inference_flops_per_image=encoder_flops(c),
                inference_mfu=achieved / peak if peak else None)


# ---------------------------------------------------------------------------------------------- the command
def machine_info(device: torch.device) -> dict:
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                device=str(device), threads=torch.get_num_threads())
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        info.update(cpu=names[0] if names else platform.processor(), cpu_count=len(names))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_bench(cfg: BenchConfig) -> dict:
    """Run every case of ``cfg``; writes ``<output>.json`` and ``<output>.md`` and returns the JSON."""
    device = resolve_device(cfg.device)
    models = [resolve_model(m) for m in cfg.models]
    peaks_raw = [matmul_peak(device, cfg.matmul_size)]
    if device.type == "cuda" and "bf16" in cfg.variants:
        peaks_raw.append(matmul_peak(device, cfg.matmul_size, torch.bfloat16))
    peaks = {p["dtype"]: p["flops_per_s"] for p in peaks_raw}
    logger.info("matmul peak: %s", ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    results, skipped = [], []
    for model in models:
        for batch in cfg.batch_sizes:
            for variant in cfg.variants:
                case, why = variant_case(model, batch, variant, device)
                if case is None:
                    skipped.append(dict(model=model, batch_size=batch, variant=variant, reason=why))
                    continue
                results.append(run_case(case, cfg, device, peaks))
    report = dict(
        command=" ".join(["maelab", "bench", *changed_options(cfg)]),
        time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=machine_info(device),
        matmul_peak=peaks_raw, results=results, skipped=skipped, ratios=ratios(results),
    )
    if cfg.loader:
        from maelab.bench.loader import loader_throughput

        report["loader"] = loader_throughput(cfg.dataset, max(cfg.batch_sizes), cfg.loader_workers, device,
                                             cfg.data, cfg.max_bad_fraction)
    out = Path(cfg.output)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, report)
    md_path.write_text(markdown_report(report))
    logger.info("wrote %s and %s", json_path, md_path)
    return report
