"""How well a consistency model reproduces its teacher's probability-flow ODE, on Kodak crops.

    python benchmarks/cm_quality.py --model runs/cm-lr --teacher percept-prior-s --images 8

A consistency model f(x, sigma) is trained to map a noisy image to the end of the teacher's PF-ODE
trajectory through it (Song et al. 2023), in one network evaluation. Protocol: the 256x256 centre
crops of the first `--images` Kodak images (never used in training), x_sigma = x0 + sigma * eps in
[-1,1] units with a fixed seed per sigma, the same noise for every method:
  mean    the teacher's one-step posterior mean D(x_sigma, sigma) (what the student starts from);
  ode     the teacher's PF-ODE from sigma to 0, DPM-Solver++(2M) with `--ode-steps` steps (the
          target the student imitates; `--ode-steps` evaluations);
  cm      one step of the student, f(x_sigma, sigma) (the `fast` preset);
  cm2     two steps of the student (`fast-2`: re-noise to sigma/2 and map again).
Reported per sigma: PSNR against the clean crop; PSNR against the teacher's ODE endpoint
("fidelity": how closely one step reproduces many, higher is better; `mean` gives the starting point
of distillation); and SWD x1e3 against the clean crops (the project's realism distance, lower is
better), with the floor of two patch samples of the clean crops themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SIGMAS = (0.2, 0.5, 1.0)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of [-1,1] images, 8-bit peak in [0,1] units."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean(dim=(1, 2, 3)) / 4
    return float((10 * torch.log10(1 / mse)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="consistency model: zoo name, file or run")
    parser.add_argument("--teacher", default="percept-prior-s")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    parser.add_argument("--ode-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/cm_quality.json"))
    parser.add_argument("--record", action="store_true", help="store the result in the zoo card")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from prior_quality import kodak_crops

    from percept.core.denoiser import is_consistency_model
    from percept.core.provenance import environment
    from percept.enhancer.pipeline import enhance, load_prior
    from percept.metrics.realism import swd

    student, teacher = load_prior(args.model), load_prior(args.teacher)
    if not is_consistency_model(student):
        from percept.errors import PerceptError

        raise PerceptError(f"{args.model} is not a consistency model")
    clean_np, names = kodak_crops(args.images, args.size)
    clean = torch.from_numpy(clean_np).permute(0, 3, 1, 2).float()  # [0,1]
    x0 = clean * 2 - 1
    floor = swd(list(clean), list(clean), seeds=(0, 1))
    rows = []
    with torch.inference_mode():
        for sigma in args.sigmas:

            def run(model, preset, sigma=sigma, **kw):
                gens = [
                    torch.Generator().manual_seed(int(sigma * 1000) + i) for i in range(len(x0))
                ]
                return enhance(clean, model, sigma, preset, generator=gens, **kw) * 2 - 1

            out = {
                "mean": run(teacher, "euler@1"),
                "ode": run(teacher, f"dpmpp_2m@{args.ode_steps}"),
                "cm": run(student, "fast"),
                "cm2": run(student, "fast-2"),
            }
            row = {"sigma": sigma}
            for key, y in out.items():
                row[key] = {
                    "psnr": round(_psnr(y, x0), 3),
                    "fidelity_psnr": None if key == "ode" else round(_psnr(y, out["ode"]), 3),
                    "swd": round(swd(list(clean), list((y + 1) / 2), seeds=(0, 1)).mean, 2),
                }
            rows.append(row)
            print(
                f"sigma {sigma:g}: " + "; ".join(
                    f"{k} PSNR {v['psnr']:.2f} fid {v['fidelity_psnr'] or float('nan'):.2f} SWD {v['swd']:.1f}"
                    for k, v in row.items() if k != "sigma"
                ),
                flush=True,
            )  # fmt: skip
    result = {
        "benchmark": "cm_quality", "model": args.model, "teacher": args.teacher, "images": names,
        "size": args.size, "ode_steps": args.ode_steps, "swd_floor": round(floor.mean, 2),
        "rows": rows, "environment": environment(),
    }  # fmt: skip
    print(f"SWD floor (clean vs clean, other patches): {floor.mean:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.record:
        from percept.hub.zoo import record_benchmark

        record_benchmark(args.model, "kodak_cm_quality", result)
    return 0


if __name__ == "__main__":
    from percept.errors import PerceptError

    try:
        sys.exit(main())
    except PerceptError as exc:
        sys.exit(f"cm_quality: {exc}")
