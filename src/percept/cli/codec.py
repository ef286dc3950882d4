"""`percept encode | decode | info | codecs`: codecs and percept files from the shell.

Every user error is a PerceptError (one line, exit status 2); outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from percept.codecs import get_codec, list_codecs
from percept.codecs.base import operator_of
from percept.codecs.container import decode_file, encode_image, unpack
from percept.codecs.jpeg_consistency import projector_for
from percept.core.images import (
    atomic_write_bytes,
    check_output_path,
    describe_path,
    load_image,
    same_file,
    save_png,
)
from percept.core.precision import FastPath
from percept.enhancer.pipeline import Enhancer, check_sigma
from percept.enhancer.presets import PRECISIONS, PRESETS, EnhancerConfig
from percept.enhancer.signalling import resolve_sigma, signal_sigma
from percept.errors import PerceptError
from percept.fusion.decode import decode_file_fused, fusion_name_for
from percept.fusion.module import check_tau, load_fusion


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one-line PerceptErrors instead of exiting."""

    def error(self, message: str):
        raise PerceptError(f"{message} (see `percept {self.prog.split()[-1]} --help`)")


def _parser(name: str, description: str) -> _Parser:
    return _Parser(prog=f"percept {name}", description=description)


def _option_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_sets(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PerceptError(f"--set expects KEY=VALUE, got {item!r}")
        options[key] = _option_value(value)
    return options


SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0..2^64-1
MAX_FILE_BYTES = 1 << 30  # a percept file above 1 GiB is not one percept wrote


def _check_out_dir(path, source: Path | None = None) -> Path:
    """The output path, refused with one line when it cannot be written as a file or names the
    input (`percept encode a.png a.png` would overwrite what it reads)."""
    path = check_output_path(path)
    if source is not None and path.exists() and same_file(source, path):
        raise PerceptError(f"the output {path} is the input file: choose another output path")
    return path


def _read_file(path: Path) -> bytes:
    problem = describe_path(path)
    if problem:
        raise PerceptError(f"cannot read {path}: {problem}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise PerceptError(
            f"cannot read {path}: larger than {MAX_FILE_BYTES} bytes, not a percept file"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PerceptError(f"cannot read {path}: {exc.strerror}") from None


def _check_seed(p: _Parser, seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= SEED_MAX:
        p.error(f"--seed must be in 0..2^64-1, got {str(seed)[:30]}")


def _check_steps(p: _Parser, steps: int | None) -> None:
    if steps is not None and steps < 1:
        p.error(f"--steps must be at least 1, got {str(steps)[:30]}")


def encode(argv: list[str]) -> int:
    p = _parser(
        "encode", "Encode an image into a percept file (real bitstream; bpp counts the whole file)."
    )
    p.add_argument(
        "input", type=Path, help="any image Pillow reads (converted to 8-bit RGB, said so)"
    )
    p.add_argument("output", help="the percept file to write")
    p.add_argument(
        "--codec", default="jpeg", help="codec name (see `percept codecs`; default jpeg)"
    )
    p.add_argument("--quality", type=int, default=None, help="quality knob (range per codec)")
    p.add_argument("--weights", default=None, help="local weights file for a learned codec")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="codec option")
    p.add_argument(
        "--signal-sigma",
        metavar="PRESET",
        default=None,
        help="calibrate the enhancer's sigma on this image for PRESET (with --prior) and write it "
        "into the file, so `percept decode --enhance PRESET --sigma auto` doubles this image's MSE",
    )
    p.add_argument("--prior", default=None, help="prior name or weights path (with --signal-sigma)")
    p.add_argument("--seed", type=int, default=0, help="the decoder's noise seed (--signal-sigma)")
    p.add_argument("--steps", type=int, default=None, help="solver steps (--signal-sigma)")
    p.add_argument(
        "--target-ratio",
        type=float,
        default=2.0,
        help="enhanced MSE over decoded MSE to aim at (--signal-sigma; the paper's rule: 2)",
    )
    p.add_argument(
        "--consistency",
        action="store_true",
        help="JPEG, with --signal-sigma: calibrate for `percept decode --consistency` (the JPEG "
        "consistency projection at every step)",
    )
    args = p.parse_args(argv)
    if args.signal_sigma is not None and not args.prior:
        p.error("--signal-sigma needs --prior NAME_OR_PATH")
    if args.signal_sigma is None and (args.prior or args.steps is not None or args.consistency):
        p.error("--prior, --steps and --consistency go with --signal-sigma")
    if not math.isfinite(args.target_ratio) or args.target_ratio <= 1.0:
        p.error(
            f"--target-ratio must be a finite number above 1 (the enhancer adds distortion), "
            f"got {args.target_ratio}"
        )
    _check_seed(p, args.seed)
    _check_steps(p, args.steps)

    options = _parse_sets(args.set)
    if args.weights is not None:
        options["weights"] = args.weights
    codec = get_codec(args.codec, args.quality, **options)
    args.output = _check_out_dir(args.output, args.input)
    x, notes = load_image(args.input)
    for note in notes:
        print(f"percept encode: note: {args.input}: {note}", file=sys.stderr)
    data = encode_image(x, codec)
    signalled = ""
    if args.signal_sigma is not None:
        config = EnhancerConfig(args.signal_sigma, args.steps, consistency=args.consistency)
        data, entry = signal_sigma(
            data, x, Enhancer.from_pretrained(args.prior, config), seed=args.seed,
            target=args.target_ratio, codec_options=options, progress=True,
        )  # fmt: skip
        signalled = (
            f"; signalled sigma {entry['sigma']:g} for {config.key} "
            f"(MSE ratio {entry['mse_ratio']:.3f} on this image)"
        )
    atomic_write_bytes(args.output, data)
    record = unpack(data)
    print(
        f"{record.codec} quality {codec.quality}: {record.width}x{record.height}, {len(data)} bytes "
        f"(header {record.header_bytes}), {record.bpp:.4f} bpp{signalled} -> {args.output}"
    )
    return 0


def decode(argv: list[str]) -> int:
    p = _parser(
        "decode", "Decode a percept file to PNG, optionally through the diffusion enhancer."
    )
    p.add_argument("input", type=Path)
    p.add_argument("output", help="PNG to write")
    p.add_argument("--weights", default=None, help="local weights file for a learned codec")
    p.add_argument("--enhance", choices=tuple(PRESETS), default=None)
    p.add_argument("--prior", default=None, help="prior name or weights path (with --enhance)")
    p.add_argument(
        "--sigma", default=None, help="noise level: auto (default) or a value (with --enhance)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="noise seed (default: the one a signalled sigma was calibrated with, else 0)",
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="network arithmetic with --enhance: bf16 autocast is 2-3x faster on CPUs with AMX",
    )
    p.add_argument(
        "--consistency",
        action="store_true",
        help="with --enhance on a JPEG file: keep every step's estimate and the output inside the "
        "file's quantisation cells (every colour plane; 4:2:0 chroma through its 2x2 means), so "
        "the result is consistent with the bitstream; --sigma auto then uses the sigma calibrated "
        "with it",
    )
    p.add_argument(
        "--fusion",
        default=None,
        metavar="NAME",
        help="decode through paper 2's latent fusion module (a zoo name such as "
        "fusion-hyperprior-q2, 'auto' for the one shipped for the file's codec and rate, a file or "
        "a run directory); learned-codec files only",
    )
    p.add_argument(
        "--tau",
        default=None,
        help="with --fusion: 0 is the base decode bit for bit, 1 the full transform (default 0.5)",
    )
    args = p.parse_args(argv)
    if args.consistency and args.enhance is None:
        p.error("--consistency goes with --enhance")
    if args.fusion is not None and args.enhance is not None:
        p.error("choose one of --enhance (paper 1) and --fusion (paper 2)")
    if args.tau is not None and args.fusion is None:
        p.error("--tau goes with --fusion")
    if args.enhance is None:
        given = [
            flag
            for flag, value in (
                ("--prior", args.prior),
                ("--sigma", args.sigma),
                ("--steps", args.steps),
                ("--precision", args.precision),
            )
            if value is not None
        ]
        if args.fusion is None and args.seed is not None:
            given.append("--seed")
        if given:
            p.error(f"{', '.join(given)} go(es) with --enhance")
    _check_seed(p, args.seed)
    _check_steps(p, args.steps)
    args.precision = args.precision or "fp32"
    args.sigma = "auto" if args.sigma is None else args.sigma
    if args.sigma != "auto":
        try:
            check_sigma(float(args.sigma))
        except ValueError:
            p.error(f"--sigma must be 'auto' or a number, got {args.sigma[:40]!r}")
    if args.fusion is not None:
        return _decode_fused(args)

    data = _read_file(args.input)
    args.output = _check_out_dir(args.output, args.input)
    options = {} if args.weights is None else {"weights": args.weights}
    x_hat, record = decode_file(data, **options)
    if args.enhance is not None:
        x_hat = _enhance_decoded(x_hat, record, args)
    save_png(x_hat, args.output)
    extra = f", enhanced ({args.enhance})" if args.enhance else ""
    extra += ", projected into the JPEG's quantisation cells" if args.consistency else ""
    print(
        f"{record.codec}: {record.width}x{record.height}, {record.bpp:.4f} bpp{extra} -> {args.output}"
    )
    return 0


def _enhance_decoded(x_hat, record, args):
    """`percept decode ... --enhance PRESET --prior P --sigma auto|VALUE [--seed N] [--steps N]
    [--consistency]`: the setting, its models, the file's projection and sigma, then the enhancer.

    With `--sigma auto` a sigma the encoder signalled in the file for this setting and prior is
    used with the encoder's seed (unless --seed is given), else the calibration table's
    (`percept.enhancer.signalling.resolve_sigma`). With `--consistency` (JPEG) every estimate is
    projected into the file's cells and the sigma is the one calibrated with the projection."""
    if not args.prior:
        raise PerceptError(
            "--enhance needs --prior NAME_OR_PATH (a zoo name, weights file or diffusers folder)"
        )
    config = EnhancerConfig(args.enhance, args.steps, consistency=args.consistency)
    project = projector_for(record.codec, record.payload) if config.consistency else None
    enhancer = Enhancer.from_pretrained(args.prior, config, fast_path=FastPath(args.precision))
    operator = None
    if config.schedule.needs_differentiable_codec:
        options = {"weights": args.weights} if args.weights else {}
        operator = operator_of(get_codec(record.codec, record.quality, **options))
    sigma, seed = resolve_sigma(enhancer, record, args.sigma, args.seed)
    return enhancer(x_hat, sigma, seed=seed, operator=operator, project=project, progress=True)


def _decode_fused(args) -> int:
    """`percept decode FILE OUT --fusion NAME --tau T [--seed N]`."""

    tau = check_tau(0.5 if args.tau is None else args.tau)
    data = _read_file(args.input)
    args.output = _check_out_dir(args.output, args.input)
    name = args.fusion
    if name == "auto":
        record = unpack(data)
        name = fusion_name_for(record.codec, record.quality)
    x_hat, record = decode_file_fused(data, load_fusion(name), tau, seed=args.seed or 0)
    save_png(x_hat, args.output)
    print(
        f"{record.codec}: {record.width}x{record.height}, {record.bpp:.4f} bpp, fused ({name}, "
        f"tau {tau:g}, seed {args.seed or 0}) -> {args.output}"
    )
    return 0


def info(argv: list[str]) -> int:
    p = _parser("info", "Show what a percept file holds.")
    p.add_argument("input", type=Path)
    args = p.parse_args(argv)

    record = unpack(_read_file(args.input))
    print(f"file:     {args.input}")
    print(f"format:   percept container version {record.version}")
    print(f"codec:    {record.codec}")
    print(f"params:   {json.dumps(record.params, sort_keys=True)}")
    print(f"size:     {record.width}x{record.height}")
    print(
        f"bytes:    {record.file_bytes} (header+checksum {record.header_bytes}, payload {len(record.payload)})"
    )
    print(f"bpp:      {record.bpp:.4f} (whole file)")
    print(f"crc32:    {record.crc32:#010x} ok")
    return 0


def codecs(argv: list[str]) -> int:
    p = _parser("codecs", "List codecs and whether each is available on this machine.")
    p.parse_args(argv)

    rows = [("codec", "kind", "quality", "default", "available", "notes")]
    for c in list_codecs():
        note = c.quality_meaning if c.available else c.reason
        rows.append(
            (
                c.name,
                c.kind.split()[0],
                f"{c.quality_min}..{c.quality_max}",
                str(c.default_quality),
                "yes" if c.available else "no",
                note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5])
    return 0


COMMANDS = {"encode": encode, "decode": decode, "info": info, "codecs": codecs}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        raise PerceptError(f"codec_cli handles {', '.join(COMMANDS)}; got {argv[:1]}")
    return COMMANDS[argv[0]](argv[1:])
