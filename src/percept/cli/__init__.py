"""The `percept` command. Subcommands live in their own modules, each with `main(argv) -> int`.

Every user-facing failure is a `PerceptError`: one line on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from percept.errors import PerceptError

# name -> (module, help). Modules are imported only when their subcommand runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("percept.cli.codec", "encode an image into a percept file (real bitstream)"),
    "decode": ("percept.cli.codec", "decode a percept file to PNG, optionally with the enhancer"),
    "info": ("percept.cli.codec", "show what a percept file holds"),
    "codecs": ("percept.cli.codec", "list codecs and whether each is available here"),
    "demo": (
        "percept.cli.demo",
        "a real photo at a low rate, decoded plainly and through the enhancer, in one PNG",
    ),
    "train": (
        "percept.cli.train",
        "train the project's models (prior, consistency model, codec, aux encoder, fusion)",
    ),
    "calibrate": (
        "percept.cli.calibrate",
        "measure the sigma of paper 1's MSE-doubling rule for a setting; store it in the table",
    ),
    "publish": (
        "percept.cli.publish",
        "ship a finished training run into the model zoo (zoo.json)",
    ),
    "eval": (
        "percept.cli.eval",
        "evaluate codecs and enhancers over a dataset, write results JSON",
    ),
}


def _usage() -> str:
    lines = ["usage: percept COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `percept COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from percept import __version__

        print(f"percept {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"percept: error: unknown command {name!r} (choose from {', '.join(SUBCOMMANDS)})",
            file=sys.stderr,
        )
        return 2

    try:
        # the imports are inside the handlers too: Ctrl-C while torch loads is one line, exit 130
        from percept.core import cpu

        cpu.reuse_freed_memory()  # whole-image networks on CPU run faster (percept.core.cpu)
        module = importlib.import_module(SUBCOMMANDS[name][0])
        code = int(module.main([name, *rest]) or 0)
        sys.stdout.flush()  # a block-buffered pipe fails here, inside the handler below
        return code
    except PerceptError as exc:
        print(f"percept {name}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"percept {name}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"percept {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`percept info f | head -1`): stop quietly, as Unix tools do; stdout
        # is pointed at devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _one_line(exc: BaseException) -> str:
    """An error message as one line (a library's message may hold newlines)."""
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
