"""`percept publish RUN_DIR [NAME]`: ship a training run's weights into the zoo (zoo.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from percept.training.publish import publish_any


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="percept publish",
        description="Ship a training run into the package's zoo: weights as safetensors (float16 "
        "unless --float32), their sha256 and a model card in zoo.json.",
    )
    p.add_argument(
        "run_dir", type=Path, help="a `percept train prior|distill|codec|fusion` run directory"
    )
    p.add_argument(
        "name",
        nargs="?",
        help="zoo name (priors and consistency models; codecs and fusion modules: their config name)",
    )
    p.add_argument("--folder", type=Path, default=None, help="zoo folder (default: the package's)")
    p.add_argument("--float32", action="store_true", help="store float32 instead of float16")
    args = p.parse_args(argv[1:])
    entry = publish_any(args.run_dir, args.name, folder=args.folder, half=not args.float32)
    card = entry["card"]
    print(f"published {card['name']}: {entry['file']} "
          f"({entry['kind']}, {card.get('steps')} steps, sha256 {entry['sha256'][:12]}...)")  # fmt: skip
    return 0
