"""Paper 2's gate and headline: the latent fusion module on Kodak, beside paper 1's presets.

    python benchmarks/fusion_gate.py --images 24 --crop crop256 --out results/fusion-kodak.json

1. The harness (`percept eval`) encodes each Kodak image once per percept-hyperprior rate and
   decodes it every way in one process: plain; fused at each tau (`fuse:TAU`, the shipped module
   of that rate); paper 1's fast preset at a few sigmas and at its calibrated sigma, and the
   medium preset at its calibrated sigma. Every output is kept as a PNG beside the results file.
2. `percept.eval.fusion_report` reads that file: the tau sweep (bpp, PSNR, MS-SSIM, SSIMULACRA 2,
   SWD with a 90% paired bootstrap interval of the gain over the decode, patch KID, decode time),
   the tau whose BD-PSNR loss is at most 1 dB, BD-rates on SWD and SSIMULACRA 2 at that tau with
   intervals, and the head-to-head with the fast preset at the same PSNR loss.
3. Gates, PASS/FAIL per row: tau = 0 bit-exact; PSNR non-increasing in tau; realism beyond the
   interval at the 1 dB tau at every rate; fusion's decode overhead under 25% of a fast-preset
   enhancement of the same image (a ratio measured side by side, per image, in one process).

The record (`--record`, JSON) holds every table; `--store` also writes the figures into each fusion
module's zoo card (`benchmark_kodak`). LPIPS and FID are added by the harness where their weights
exist, and recorded as unavailable (with the reason) where they do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="kodak")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--crop", default="crop256")
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--taus", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    p.add_argument("--fast-sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--no-medium", action="store_true", help="leave out the medium preset")
    p.add_argument("--bootstrap", type=int, default=20)
    p.add_argument("--out", default="results/fusion-kodak.json", help="the harness results file")
    p.add_argument("--record", default="results/fusion-gate.json", help="this benchmark's record")
    p.add_argument("--store", action="store_true", help="write the figures into the zoo cards")
    args = p.parse_args(argv)

    from percept.eval import fusion_report as report
    from percept.eval.harness import run
    from percept.fusion.decode import fusion_name_for

    methods = ["decode", *(f"fuse:{t:g}" for t in args.taus)]
    methods += [f"enhance:fast:{s:g}" for s in args.fast_sigmas] + ["enhance:fast:auto"]
    methods += [] if args.no_medium else ["enhance:medium:auto"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run(
        args.dataset, {"percept-hyperprior": args.qualities}, methods, out=out, crop=args.crop,
        limit=args.images, prior="percept-prior-s", consistency_model="percept-cm-s",
        description="paper 2's latent fusion (fuse:TAU) beside paper 1's presets",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    table = report.method_table(out, bootstrap=args.bootstrap)
    tau = report.tau_within(table, 1.0)
    head = report.headline(out, table, tau, bootstrap=args.bootstrap) if tau > 0 else None
    versus = report.head_to_head(table, tau) if tau > 0 else pd.DataFrame()
    gates = report.gates(out, table, tau)
    pd.set_option("display.width", 200)
    print(table.round(4).to_string(index=False))
    print("\nBD-PSNR by tau (dB):", report.bd_psnr_by_tau(table).round(3).to_dict())
    print(f"tau within 1 dB BD-PSNR loss: {tau:g}")
    if head:
        print("headline:", json.dumps(head, indent=1))
        print(versus.round(4).to_string(index=False))
    for g in gates:
        print(f"{'PASS' if g['pass'] else 'FAIL'}  q{g['quality']}  {g['gate']}: {g['value']}")
    from percept.core.provenance import environment

    record = {
        "name": "fusion_gate", "results_file": str(out), "harness_seconds": round(seconds, 1),
        "config": vars(args), "environment": environment(), "tau_1db": tau,
        "bd_psnr_by_tau": {f"{k:g}": v for k, v in report.bd_psnr_by_tau(table).items()},
        "table": table.to_dict("records"), "headline": head,
        "head_to_head": versus.to_dict("records"), "gates": gates,
    }  # fmt: skip
    Path(args.record).write_text(json.dumps(record, indent=1, default=float) + "\n")
    if args.store:
        from percept.hub.zoo import record_benchmark

        for q in args.qualities:
            rows = [r for r in record["table"] if r["quality"] == q]
            record_benchmark(fusion_name_for("percept-hyperprior", q), "benchmark_kodak", {
                "images": args.images, "crop": args.crop, "rows": rows, "tau_1db": tau,
                "gates": [g for g in gates if g["quality"] == q], "headline": head,
            })  # fmt: skip
    print(f"wrote {args.record} ({seconds:.0f} s in the harness)", file=sys.stderr)
    return 0 if all(g["pass"] for g in gates) else 1


if __name__ == "__main__":
    sys.exit(main())
