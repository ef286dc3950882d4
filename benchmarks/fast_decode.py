"""Wall time of a `fast`-preset decode of one full Kodak image on this machine (issue 5: < 3 s on 2 cores).

    python benchmarks/fast_decode.py --model percept-cm-s --image kodim23 --codec jpeg --quality 10

One decode = read the percept file, decode the codec's bytes, and enhance the decoded image with the
`fast` preset (one network evaluation of a consistency model). Reported: the median and spread of
`--repeats` timed runs after one warm-up, with the share of the network and of the codec.
`--record` stores the result in the model's card under `fast_decode_<cpu model>`, one per machine.

Without a consistency model, `--model` may name the prior with `--stand-in`: the same UNet evaluated
once through the same code path (one Euler step from sigma to 0, which is the prior's posterior-mean
estimate). That times the network a `cm-s` student would have (cm-s copies the prior's UNet) but it is
NOT the fast preset's output; the report says so. Run it on an otherwise idle machine.

`--precision` fp32, bf16 or both (default): with both, the two are timed alternately in one run
(so they share the machine's state) and the report gives the speed ratio and the largest pixel
difference between their outputs (same noise). `--layout both` and `--allocator both` add the
first precision once more with contiguous tensors, or with glibc's default malloc thresholds
instead of the `percept` commands' setting (`percept.core.cpu`), timed alternately with the rest.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="percept-cm-s", help="zoo name or weights path")
    parser.add_argument(
        "--stand-in", action="store_true", help="time a prior's single step instead"
    )
    parser.add_argument("--image", default="kodim23")
    parser.add_argument("--codec", default="jpeg")
    parser.add_argument("--quality", type=int, default=10)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument(
        "--layout",
        choices=("auto", "both"),
        default="auto",
        help="both: also time the first precision with contiguous (NCHW) tensors, side by side "
        "with the enhancer's default layout (channels-last on CPU)",
    )
    parser.add_argument(
        "--allocator",
        choices=("auto", "both"),
        default="auto",
        help="both: also time the first precision with glibc's default malloc thresholds, side by "
        "side with the setting `percept` commands use (percept.core.cpu.reuse_freed_memory)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/fast_decode.json"))
    parser.add_argument(
        "--record", action="store_true", help="store the timing in the model's zoo card"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from percept.codecs import get_codec
    from percept.codecs.container import decode_file, encode_image
    from percept.core.cpu import reuse_freed_memory
    from percept.core.provenance import environment
    from percept.enhancer.pipeline import enhance, load_prior
    from percept.eval.rd import evaluation_images

    images, source = evaluation_images([args.image])
    x = next(iter(images.values()))
    blob = encode_image(x, get_codec(args.codec, args.quality))
    model = load_prior(args.model)
    kind = (
        "prior stand-in (one Euler step, NOT the fast preset)" if args.stand_in else "fast preset"
    )

    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]

    reused = reuse_freed_memory()  # as the `percept` commands do

    def run(precision: str, layout: dict, reuse: bool = True) -> tuple[float, float, torch.Tensor]:
        if not reuse:
            reuse_freed_memory(False)
        t0 = time.perf_counter()
        x_hat, _ = decode_file(blob)
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            if args.stand_in:
                y = enhance(x_hat, model, args.sigma, "euler@1", generator=gen,
                            precision=precision, **layout)  # fmt: skip
            else:
                y = enhance(x_hat, model, args.sigma, "fast", generator=gen, precision=precision,
                            **layout)  # fmt: skip
        t2 = time.perf_counter()
        if not reuse:
            reuse_freed_memory(reused)
        return t1 - t0, t2 - t1, y

    # variant name -> run's arguments; "<precision> contiguous" with --layout both, "<precision>
    # system allocator" with --allocator both
    variants = {p: (p, {}) for p in precisions}
    if args.layout == "both":
        variants[f"{precisions[0]} contiguous"] = (precisions[0], {"channels_last": False})
    if args.allocator == "both":
        if not reused:
            raise SystemExit("fast_decode: --allocator both needs glibc (and no "
                             "PERCEPT_CPU_ALLOCATOR=system)")  # fmt: skip
        variants[f"{precisions[0]} system allocator"] = (precisions[0], {}, False)
    outputs = {v: run(*variants[v])[2] for v in variants}  # warm-up (allocator, kernels), outputs
    timings: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            timings[v].append(run(*variants[v])[:2])
    result = {
        "benchmark": "fast_decode", "what": kind, "model": args.model, "image": args.image,
        "size": list(x.shape[-2:]), "codec": args.codec, "quality": args.quality, "sigma": args.sigma,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "reuse_freed_memory": reused,
        "by_precision": {},
        "source": source, "environment": environment(),
    }  # fmt: skip
    for p in variants:
        totals = [a + b for a, b in timings[p]]
        r = {
            "median_s": statistics.median(totals), "min_s": min(totals), "max_s": max(totals),
            "median_codec_s": statistics.median(a for a, _ in timings[p]),
            "median_enhance_s": statistics.median(b for _, b in timings[p]),
        }  # fmt: skip
        if p in precisions:
            result["by_precision"][p] = r
        else:
            result[p.split(" ", 1)[1].replace(" ", "_")] = r  # contiguous, system_allocator
        print(
            f"{kind} [{p}], {args.image} {x.shape[-1]}x{x.shape[-2]}, {args.codec} q{args.quality}, "
            f"{result['threads']} threads: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, "
            f"max {r['max_s']:.2f}; codec {r['median_codec_s']:.3f} s, network "
            f"{r['median_enhance_s']:.2f} s); target < 3 s: {'met' if r['median_s'] < 3 else 'NOT met'}"
        )
    by = result["by_precision"]
    if len(precisions) == 2:
        result["speedup_bf16"] = by["fp32"]["median_s"] / by["bf16"]["median_s"]
        diff = (outputs["fp32"] - outputs["bf16"]).abs() * 255
        result["bf16_vs_fp32_max_abs_255"] = float(diff.max())
        result["bf16_vs_fp32_mean_abs_255"] = float(diff.mean())
        print(
            f"bf16 is {result['speedup_bf16']:.2f}x faster than fp32 (side by side); their outputs "
            f"differ by at most {result['bf16_vs_fp32_max_abs_255']:.2f}/255 "
            f"(mean {result['bf16_vs_fp32_mean_abs_255']:.3f}/255)"
        )

    def versus(variant: str, key: str) -> tuple[float, float]:
        """(how many times faster the first precision's default run is than `variant`, stored
        under `key`; the largest difference between their outputs, 0..255)."""
        first = precisions[0]
        result[key] = result[variant.replace(" ", "_")]["median_s"] / by[first]["median_s"]
        diff = (outputs[first] - outputs[f"{first} {variant}"]).abs() * 255
        return result[key], float(diff.max())

    if args.layout == "both":
        speedup, result["layout_max_abs_255"] = versus("contiguous", "speedup_layout")
        print(
            f"{precisions[0]}: the default layout is {speedup:.2f}x faster than contiguous "
            f"tensors (side by side); outputs differ by at most {result['layout_max_abs_255']:.3f}/255"
        )
    if args.allocator == "both":
        speedup, max_diff = versus("system allocator", "speedup_allocator")
        print(
            f"{precisions[0]}: reusing freed memory is {speedup:.2f}x faster than glibc's default "
            f"thresholds (side by side); outputs differ by at most {max_diff:.3f}/255"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.record:
        if args.stand_in:
            raise SystemExit("fast_decode: a stand-in timing is not recorded in a model card")
        from percept.hub.zoo import record_benchmark

        # one record per machine: a 2-core Xeon with AMX and a 2-core AMD EPYC differ by 2x and more
        machine = re.sub(r"[^a-z0-9]+", "_", result["environment"]["cpu"].lower()).strip("_")
        record_benchmark(args.model, f"fast_decode_{machine}", result)
    return 0


if __name__ == "__main__":
    from percept.errors import PerceptError

    try:
        sys.exit(main())
    except PerceptError as exc:
        sys.exit(f"fast_decode: {exc}")
