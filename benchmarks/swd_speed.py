"""SWD with the reference's side shared, against separate calls, side by side in one run.

    python benchmarks/swd_speed.py                  # 24 images of 256x256, 9 methods, 5 resamples
    python benchmarks/swd_speed.py --images 8 --methods 3 --resamples 3

A results table compares many methods with one set of originals (`fusion_report.method_table`:
per rate, the plain decode and nine fused or enhanced outputs). `swd_many` and `swd_gains` compute
what depends on the originals (and, for the bootstrap, on the baseline) once; this script times
them against the separate `swd` / `swd_gain` calls they replace, checks that the numbers are
identical, and prints seconds and the ratio. The images are synthetic (noise of growing strength
over random textures): the timing depends on the sizes, not on the content.
"""

from __future__ import annotations

import argparse
import time

import torch

from percept.metrics import swd, swd_gain, swd_gains, swd_many


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--methods", type=int, default=9, help="test sets against one reference")
    p.add_argument("--resamples", type=int, default=5, help="bootstrap resamples per gain")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    shape = (3, args.size, args.size)
    refs = [torch.rand(shape, generator=g) for _ in range(args.images)]

    def noisy(s):
        return [(x + s * torch.randn(shape, generator=g)).clamp(0, 1) for x in refs]

    base = noisy(0.1)
    tests = [noisy(0.01 * (k + 1)) for k in range(args.methods)]
    boot = {"resamples": args.resamples}
    rows = [
        ("swd, each method", *timed(lambda: [swd(refs, t) for t in tests])),
        ("swd_many", *timed(lambda: swd_many(refs, tests))),
        ("swd_gain, each method", *timed(lambda: [swd_gain(refs, base, t, **boot) for t in tests])),
        ("swd_gains", *timed(lambda: swd_gains(refs, base, tests, **boot))),
    ]
    print(f"{args.images} images {args.size}x{args.size}, {args.methods} methods, "
          f"{args.resamples} resamples, {torch.get_num_threads()} threads")  # fmt: skip
    for (name_a, sec_a, out_a), (name_b, sec_b, out_b) in (rows[:2], rows[2:]):
        same = "identical" if out_a == out_b else "DIFFERENT"
        print(f"{name_a:>24}: {sec_a:7.1f} s   {name_b:>10}: {sec_b:7.1f} s   "
              f"ratio {sec_a / sec_b:4.2f}   numbers {same}")  # fmt: skip
        if out_a != out_b:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
