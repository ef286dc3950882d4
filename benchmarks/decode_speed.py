"""Decode speed of paper 1's presets, fp32 eager against the library's fast path, side by side.

    python benchmarks/decode_speed.py                       # on a GPU: the issue's full grid
    python benchmarks/decode_speed.py --quick               # on a CPU: a small grid, minutes

For each model (`paper`: a diffusers UNet2DModel in the consistency models' LSUN 256 configuration
with random weights, which times the paper's network; `project`: the shipped percept-prior-s and
percept-cm-s) and each path (`eager`: FastPath() = fp32, no compilation; `fast`:
FastPath.fastest(device) = on CUDA bf16 autocast, channels-last and torch.compile with CUDA graphs),
it times at 256x256 with batch 1 and 16 and on one Kodak-size image (512x768): the codec's decode,
one network evaluation, and the fast, medium (10 network evaluations) and slow presets. Reported:
median seconds per call and per image over `--repeats` after warm-up (the first calls compile),
the eager/fast ratio, peak GPU memory, the device's name, and the PSNR between the fast path's and
eager outputs on the same noise (the fast path must stay at 40 dB or more). Random weights time a
network; they are never a quality figure. On a CPU the fast path is fp32 eager by design
(`FastPath.fastest`), so a CPU run checks the script and times the presets, not the fast path. `--out` writes the JSON (results/gpu/decode_speed.json
for a GPU run).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from percept.codecs import get_codec
from percept.codecs.base import operator_of
from percept.codecs.container import decode_file, encode_image
from percept.core.precision import FastPath
from percept.core.provenance import environment
from percept.enhancer.pipeline import Enhancer, load_prior
from percept.metrics import psnr
from percept.models.diffusers import DDPMDenoiser, DiffusersConsistencyDenoiser

# The consistency models' LSUN 256 UNet (openai/diffusers-cd_bedroom256_*), as diffusers builds it.
LSUN_256_UNET = {
    "sample_size": 256,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "num_class_embeds": None,
    "block_out_channels": [256, 256, 512, 512, 1024, 1024],
    "attention_head_dim": 64,
    "down_block_types": ["ResnetDownsampleBlock2D"] * 3 + ["AttnDownBlock2D"] * 3,
    "up_block_types": ["AttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"] * 3,
    "resnet_time_scale_shift": "default",
    "upsample_type": "resnet",
    "downsample_type": "resnet",
}
PRESETS = {"fast": "fast", "medium": "medium@10", "slow": "slow"}


def paper_models(quick: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(prior, consistency model) with the paper's network and random weights; `quick` shrinks
    the channels 8x so a CPU finishes (then it no longer times the paper's network)."""
    from diffusers import UNet2DModel

    config = dict(LSUN_256_UNET)
    if quick:
        config["block_out_channels"] = [c // 8 for c in config["block_out_channels"]]
        config["attention_head_dim"] = 8
    torch.manual_seed(0)
    unet = UNet2DModel(**config).eval()
    betas = torch.linspace(1e-4, 0.02, 1000)
    prior = DDPMDenoiser(unet, torch.cumprod(1 - betas, 0))
    cm = DiffusersConsistencyDenoiser(UNet2DModel(**config).eval(), 0.002, 80.0, 0.5)
    return prior, cm


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> tuple[float, object]:
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=["paper", "project"], choices=["paper", "project"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--presets", nargs="+", default=None, choices=list(PRESETS),
                   help="default: all three; with --quick, fast and medium (a CPU slow call takes minutes)")
    p.add_argument("--no-kodak-size", action="store_true", help="skip the 512x768 image")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--quick", action="store_true",
                   help="CPU: batch 1, 1 repeat, 1/8-width paper net, no slow preset unless --presets names it")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.batches, args.repeats, args.warmup, args.no_kodak_size = [1], 1, 1, True
    if args.presets is None:
        args.presets = ["fast", "medium"] if args.quick else list(PRESETS)
    shapes = [(b, 256, 256) for b in args.batches] + ([] if args.no_kodak_size else [(1, 512, 768)])
    codec = get_codec("percept-hyperprior", 2)
    operator = operator_of(codec)
    gen = torch.Generator().manual_seed(0)
    rows, checks = [], []
    for model_name in args.models:
        if model_name == "paper":
            prior, cm = paper_models(args.quick)
        else:
            prior, cm = load_prior("percept-prior-s"), load_prior("percept-cm-s")
        paths = {
            "eager": Enhancer(prior, consistency_model=cm, device=device, fast_path=FastPath()),
            "fast": Enhancer(prior, consistency_model=cm, device=device),
        }
        for batch, h, w in shapes:
            x = torch.rand(batch, 3, h, w, generator=gen)
            data = encode_image(x[:1], codec)
            seconds, _ = timed(lambda data=data: decode_file(data), device, args.repeats, 1)
            rows.append({"model": model_name, "path": "-", "what": "codec decode", "batch": 1,
                         "size": f"{h}x{w}", "seconds": seconds, "per_image": seconds})  # fmt: skip
            outputs = {}
            for path, enhancer in paths.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                net = enhancer.with_config("medium").denoiser
                xd = (x * 2 - 1).to(device)
                sigma = torch.full((batch,), args.sigma, device=device)
                with torch.inference_mode(), torch.autocast(
                    device.type, torch.bfloat16, enabled=enhancer.fast_path.precision == "bf16"
                ):
                    seconds, _ = timed(
                        lambda net=net, xd=xd, s=sigma: net(xd, s), device, args.repeats, args.warmup
                    )
                rows.append({"model": model_name, "path": path, "what": "network evaluation",
                             "batch": batch, "size": f"{h}x{w}", "seconds": seconds,
                             "per_image": seconds / batch})  # fmt: skip
                for preset in args.presets:
                    run = enhancer.with_config(PRESETS[preset])
                    op = operator if preset == "slow" else None
                    gens = [torch.Generator().manual_seed(i) for i in range(batch)]

                    def call(run=run, op=op, gens=gens, x=x):
                        with torch.inference_mode(op is None):
                            fresh = [torch.Generator().set_state(g.get_state()) for g in gens]
                            return run(x, args.sigma, generator=fresh, operator=op)

                    seconds, y = timed(call, device, args.repeats, args.warmup)
                    outputs[(preset, path)] = y.float().cpu()
                    rows.append({"model": model_name, "path": path, "what": f"{preset} preset",
                                 "batch": batch, "size": f"{h}x{w}", "seconds": seconds,
                                 "per_image": seconds / batch})  # fmt: skip
                if device.type == "cuda":
                    rows[-1]["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            for preset in args.presets:
                db = float(psnr(outputs[(preset, "fast")], outputs[(preset, "eager")]).min())
                checks.append({"model": model_name, "preset": preset, "batch": batch,
                               "size": f"{h}x{w}", "psnr_fast_vs_eager": db})  # fmt: skip
    by_key = {(r["model"], r["what"], r["batch"], r["size"], r["path"]): r for r in rows}
    for r in rows:
        if r["path"] == "fast":
            eager = by_key[(r["model"], r["what"], r["batch"], r["size"], "eager")]
            r["speedup_over_eager"] = eager["seconds"] / r["seconds"]
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    )
    for r in rows:
        ratio = f"  x{r['speedup_over_eager']:.2f} over eager" if "speedup_over_eager" in r else ""
        print(f"{r['model']:8s} {r['path']:5s} {r['what']:20s} b{r['batch']:<3d} {r['size']:8s} "
              f"{r['seconds'] * 1e3:9.1f} ms  ({r['per_image'] * 1e3:.1f} ms/image){ratio}")  # fmt: skip
    for c in checks:
        print(f"{c['model']} {c['preset']} b{c['batch']} {c['size']}: fast vs eager "
              f"{c['psnr_fast_vs_eager']:.1f} dB (needs >= 40)")  # fmt: skip
    record = {
        "device": device_name,
        "quick": args.quick,
        "note": "paper model: random weights (timing only)"
        + ("; --quick shrinks it 8x, so it is not the paper's network" if args.quick else ""),
        "environment": environment(),
        "rows": rows,
        "checks": checks,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(c["psnr_fast_vs_eager"] >= 40 for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
