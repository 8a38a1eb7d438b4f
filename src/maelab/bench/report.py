"""Ratios between benchmark cases and the Markdown table ``maelab bench`` writes."""

from __future__ import annotations

# (name, numerator variant, denominator variant): speedup = step time of numerator / step time of denominator.
SPEEDUPS = (
    ("asymmetric speedup (mask tokens in encoder vs MAE, paper Table 2)", "mask_tokens", "mae"),
    ("1-block vs preset decoder", "mae", "decoder1"),
    ("preset vs 8-block decoder", "decoder8", "mae"),
    ("block vs random mask sampling (time with / without)", "block_mask", "mae"),
    ("torch.compile vs eager", "mae", "compile"),
    ("bf16 autocast vs fp32", "mae", "bf16"),
    ("gradient checkpointing overhead (time with / without)", "grad_ckpt", "mae"),
)


def ratios(results: list[dict]) -> list[dict]:
    """Step-time ratios between variants of the same model and batch size (only pairs that were measured)."""
    by_key = {(r["model"], r["batch_size"], r["variant"]): r for r in results}
    out = []
    for model, batch in dict.fromkeys((r["model"], r["batch_size"]) for r in results):
        for name, slow, fast in SPEEDUPS:
            a, b = by_key.get((model, batch, slow)), by_key.get((model, batch, fast))
            if a is None or b is None:
                continue
            out.append(dict(model=model, batch_size=batch, name=name, numerator=slow, denominator=fast,
                            ratio=a["median_step_s"] / b["median_step_s"]))
        grad, plain = by_key.get((model, batch, "grad_ckpt")), by_key.get((model, batch, "mae"))
        if grad is not None and plain is not None and plain["peak_memory_mb"] > 0:
            out.append(dict(model=model, batch_size=batch, name="gradient checkpointing peak memory / without",
                            numerator="grad_ckpt", denominator="mae",
                            ratio=grad["peak_memory_mb"] / plain["peak_memory_mb"]))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_report(report: dict) -> str:
    """Human-readable summary of a ``maelab bench`` JSON report."""
    m = report["machine"]
    lines = [
        f"# maelab bench ({report['time_utc']})", "",
        f"- command: `{report['command']}`",
        f"- machine: {m.get('gpu') or m.get('cpu', '?')} ({m.get('cpu_count', '?')} CPU threads visible, "
        f"torch {m['torch']} using {m['threads']} threads, device {m['device']})",
    ]
    for peak in report["matmul_peak"]:
        lines.append(f"- measured dense matmul peak ({peak['dtype']}, {peak['size']}^2): "
                     f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s (best of {len(peak['seconds'])})")
    lines += [
        "", "MFU = analytic model FLOP/s (matmuls only, backward = 2x forward) / the matmul peak above; "
        "paired MFU = median over the timed steps of (that step's FLOP/s) / (a matmul timed just before it), "
        "the ratio that survives a machine whose load changes during the run. "
        "Memory: " + ("CUDA max allocated." if m["device"].startswith("cuda") else
                      "peak resident set size of the whole process during a timed step (it includes memory the "
                      "allocator kept from earlier cases, so compare CPU cases with care)."), "",
        "| model | batch | variant | dtype | enc tokens | GFLOP/img (train) | img/s | TFLOP/s | MFU | paired MFU "
        "| peak MB | encoder inference img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['variant']} | {r['dtype']} | {r['encoder_tokens']} "
            f"| {r['flops_per_image']['train_step'] / 1e9:.2f} | {r['img_per_s']:.2f} "
            f"| {r['achieved_flops_per_s'] / 1e12:.3f} | {_fmt(r['mfu'], '.1%')} | {r['mfu_paired']:.1%} "
            f"| {r['peak_memory_mb']:.0f} "
            f"| {_fmt(r.get('inference_img_per_s'), '.2f')} |"
        )
    if report["ratios"]:
        lines += ["", "| model | batch | ratio | value |", "|---|---|---|---|"]
        for q in report["ratios"]:
            lines.append(f"| {q['model']} | {q['batch_size']} | {q['name']} | {q['ratio']:.2f}x |")
    if report["skipped"]:
        lines += ["", "Skipped:"]
        lines += [f"- {s['model']} b={s['batch_size']} {s['variant']}: {s['reason']}" for s in report["skipped"]]
    if "loader" in report:
        ld = report["loader"]
        lines += ["", f"Loader alone ({ld['dataset']}, batch {ld['batch_size']}, {ld['num_workers']} workers, "
                      f"to {ld['device']}): training path {ld['train_path']['img_per_s']:.0f} img/s; uint8 crops + "
                      f"on-device flip/normalize {ld['uint8_device_path']['img_per_s']:.0f} img/s"]
        if "jpeg_device_decode_path" in ld:
            lines[-1] += f"; JPEG decoded on the device {ld['jpeg_device_decode_path']['img_per_s']:.0f} img/s"
    return "\n".join(lines) + "\n"
