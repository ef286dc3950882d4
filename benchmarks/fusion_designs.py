"""How tau should act: the three designs of `percept.fusion.module` with one trained module.

    python benchmarks/fusion_designs.py --module fusion-hyperprior-q2 --images 24 \
        --record results/fusion-designs.json [--module runs/fusion-q2-quantized ...]

With `--aux-run`, also the decodes of the true targets (what a perfect module would give at
tau = 1; `fusion_report.target_oracle`), which chose the shipped modules' target.

For each module given, on the first `--images` Kodak images (`--crop`, crop256 by default): PSNR and
SWD (x1e3) at each tau for the blend, late-start and combined designs (`fusion_report.design_sweep`:
each file decoded once, the same per-image seeds for every design). The chapter keeps the design
whose curve reaches more realism per dB; a module whose config models the rounded latents (the
paper's target) is compared the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--module", nargs="+", default=["fusion-hyperprior-q2"])
    p.add_argument("--dataset", default="kodak")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--crop", default="crop256")
    p.add_argument("--taus", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    p.add_argument("--designs", nargs="+", default=None, help="names of fusion_report.DESIGNS")
    p.add_argument(
        "--aux-run",
        nargs="*",
        default=[],
        metavar="Q=DIR",
        help="auxiliary encoder runs (e.g. 2=runs/aux-q2): adds the decodes of the true targets",
    )
    p.add_argument("--record", default="results/fusion-designs.json")
    p.add_argument(
        "--store",
        action="store_true",
        help="also write the tables into the zoo card of the shipped module of each measured rate",
    )
    args = p.parse_args(argv)

    from percept.core.provenance import environment
    from percept.eval.fusion_report import DESIGNS, design_sweep, target_oracle
    from percept.fusion.module import load_fusion
    from percept.hub.datasets import load_dataset

    images = {
        i.name: i.image for i in load_dataset(args.dataset, crop=args.crop, limit=args.images)
    }
    tables = {}
    for name in args.module:
        table = design_sweep(load_fusion(name), images, args.taus, args.designs or tuple(DESIGNS))
        print(f"\n{name}\n{table.round(3).to_string(index=False)}")
        tables[name] = table.to_dict("records")
    oracles = {}
    for item in args.aux_run:
        from percept.training.fusion import base_codec, load_aux_encoder

        q, _, run_dir = item.partition("=")
        model, _ = base_codec("percept-hyperprior", int(q))
        table = target_oracle(model, load_aux_encoder(run_dir, model), images)
        print(f"\npercept-hyperprior q{q}: decodes of the true targets ({run_dir})")
        print(table.round(3).to_string(index=False))
        oracles[f"q{q}"] = {"aux_run": run_dir, "rows": table.to_dict("records")}
    record = {"name": "fusion_designs", "config": vars(args), "environment": environment(),
              "tables": tables, "target_oracle": oracles}  # fmt: skip
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
    if args.store:  # the card of the shipped module of each rate measured carries the figures
        from percept.fusion.decode import fusion_name_for
        from percept.hub.zoo import record_benchmark

        extra = {"images": args.images, "crop": args.crop, "dataset": args.dataset}
        for q, oracle in oracles.items():
            name = fusion_name_for("percept-hyperprior", int(q[1:]))
            record_benchmark(name, "target_oracle", {**extra, **oracle})
            record_benchmark(name, "design_sweep", {**extra, "tables": tables})
    return 0


if __name__ == "__main__":
    sys.exit(main())
