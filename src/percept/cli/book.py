"""Run the book's notebooks with papermill and build the Jupyter Book.

    python -m percept.cli.book run   --profile tiny|full [--notebooks 01_codecs ...]
    python -m percept.cli.book build --profile tiny|full [--notebooks ...] [--skip-run]

`run` executes each source notebook in `notebooks/` with the parameters of its section in
`notebooks/params/<profile>.yaml` and writes the executed copy to `book/notebooks/` (git-ignored), so
the book always renders freshly executed notebooks. `build` runs them and then builds the book with
jupyter-book 1.x, warnings as errors (`-W -n --keep-going`, as the Project Pythia and QuantEcon books
do). `_config.yml` sets `execute_notebooks: "off"`: papermill has already executed them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from percept.core.provenance import environment
from percept.errors import PerceptError
from percept.hub.data import kodak_dir

EXECUTED_DIR = Path("book") / "notebooks"
KERNEL_NAME = "python3"
# Warnings printed by a notebook (DeprecationWarning, FutureWarning, UserWarning, ...) count as
# failures, as Sphinx warnings do under -W; other stderr text (progress bars) is allowed.
WARNING_RE = re.compile(r"\b[A-Za-z]*Warning: ")
# Known warnings that change no result: compressai 1.2.8 imports torch_geometric, whose import
# calls torch.jit.script (deprecated in torch 2.14), and imports tqdm.auto, which without ipywidgets
# says "IProgress not found" once. The library's own bars are plain-text tqdm (widget bars would
# need ipywidgets and do not survive papermill into the HTML).
TOLERATED_WARNINGS = (
    "FutureWarning: `torch.jit.script` is deprecated",
    "TqdmWarning: IProgress not found",
)


def project_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding `_toc.yml`: `root` if given, else the current folder or the source tree."""
    candidates = [Path(root)] if root else [Path.cwd(), Path(__file__).resolve().parents[3]]
    for folder in candidates:
        if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
            return folder.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise PerceptError(
        f"no book found (_toc.yml and notebooks/) in {where}: run from the project root"
    )


def source_notebooks(root: Path) -> list[str]:
    """Names (file stems) of the source notebooks, in file-name order (= chapter order)."""
    return sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))


# A profile's optional section of parameters that replace its others when Kodak is not on this
# machine (PERCEPT_DATA without kodak/, as on a fresh clone): `{notebook: {name: value}}`.
WITHOUT_KODAK = "without_kodak"


def load_profile(root: Path, profile: str, *, kodak: bool | None = None) -> dict[str, dict]:
    """The parameter sections of `notebooks/params/<profile>.yaml`, one per source notebook.

    A `without_kodak` section (see WITHOUT_KODAK) is applied when `kodak` is False; None asks
    `percept.hub.data.kodak_dir()` whether PERCEPT_DATA holds Kodak. The notebooks print which photos
    they used, so a run on the replacements says so."""
    import yaml

    folder = root / "notebooks" / "params"
    path = folder / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise PerceptError(f"unknown profile {profile!r}: no {path} (profiles: {known})")
    sections = yaml.safe_load(path.read_text()) or {}
    if not isinstance(sections, dict):
        raise PerceptError(f"{path}: expected a mapping of notebook name -> parameters")
    replacements = sections.pop(WITHOUT_KODAK, None) or {}
    names = set(source_notebooks(root))
    # Every notebook needs a section, so that a profile always says how big each run is.
    missing = sorted(names - set(sections))
    unknown = sorted(set(sections) - names)
    if missing or unknown:
        raise PerceptError(
            f"{path}: sections must match notebooks/*.ipynb; "
            f"missing {missing or 'none'}, unknown {unknown or 'none'} (an empty section is `NAME: {{}}`)"
        )
    if not isinstance(replacements, dict) or set(replacements) - names:
        raise PerceptError(
            f"{path}: {WITHOUT_KODAK} must map notebook names to parameters; "
            f"unknown {sorted(set(replacements) - names) if isinstance(replacements, dict) else replacements!r}"
        )
    if kodak is None:
        from percept.hub.data import kodak_dir

        kodak = kodak_dir() is not None
    params = {name: dict(values or {}) for name, values in sections.items()}
    if not kodak:
        for name, values in replacements.items():
            params[name].update(values or {})
    return params


def kodak_replacements(root: Path, profile: str) -> dict[str, dict]:
    """The parameters a profile replaces when Kodak is missing (empty when it has none)."""
    with_kodak = load_profile(root, profile, kodak=True)
    without = load_profile(root, profile, kodak=False)
    return {
        name: {k: v for k, v in without[name].items() if with_kodak[name].get(k, ...) != v}
        for name in without
        if without[name] != with_kodak[name]
    }


def toc_files(root: Path) -> list[str]:
    """Every `file:` entry of `_toc.yml`, without extension, relative to the project root."""
    import yaml

    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "root") and isinstance(value, str):
                    found.append(str(Path(value).with_suffix("")))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((root / "_toc.yml").read_text()))
    return found


@contextlib.contextmanager
def this_interpreter_kernel(workdir: Path) -> Iterator[None]:
    """While active, the `python3` kernelspec starts `sys.executable`, whatever other kernelspecs exist.

    A user-level `python3` kernelspec (~/.local/share/jupyter) would otherwise win over the virtual
    environment's and run the notebooks in a different Python. JUPYTER_PATH is searched first.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = workdir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.prefix})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    previous = os.environ.get("JUPYTER_PATH")
    paths = [str(workdir)] + [p for p in (previous or "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(paths)
    try:
        resolved = KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
        if resolved != sys.executable:
            raise PerceptError(
                f"kernel {KERNEL_NAME!r} resolves to {resolved}, not {sys.executable}"
            )
        yield
    finally:
        if previous is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = previous


def notebook_problems(path: Path) -> list[str]:
    """Error outputs and printed warnings in an executed notebook, one line each."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                for line in out.get("text", "").splitlines():
                    if WARNING_RE.search(line) and not any(t in line for t in TOLERATED_WARNINGS):
                        problems.append(f"cell {index}: {line.strip()}")
    return problems


def run_notebook(root: Path, name: str, parameters: dict, profile: str) -> Path:
    """Execute notebooks/<name>.ipynb into book/notebooks/<name>.ipynb; return the output path."""
    import nbformat
    import papermill


    source = root / "notebooks" / f"{name}.ipynb"
    output = root / EXECUTED_DIR / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters=parameters,
        kernel_name=KERNEL_NAME,
        # Relative paths in a notebook mean what they mean when it is opened from notebooks/.
        cwd=str(root / "notebooks"),
        progress_bar=True,
        # The notebook's own progress bars (stderr) show here while a long cell runs.
        stderr_file=sys.stderr,
    )
    nb = nbformat.read(output, as_version=4)
    nb.metadata["percept"] = {"profile": profile, "parameters": parameters, **environment()}
    nbformat.write(nb, output)
    return output


def run(root: Path, profile: str, names: list[str] | None = None) -> int:
    """Execute the chosen notebooks (all by default); 0 when every one ran clean."""
    sections = load_profile(root, profile)
    names = names or source_notebooks(root)
    unknown = [n for n in names if n not in sections]
    if unknown:
        raise PerceptError(f"unknown notebook(s) {unknown}: choose from {source_notebooks(root)}")

    if kodak_dir() is None:
        replaced = {n: v for n, v in kodak_replacements(root, profile).items() if n in names}
        if replaced:
            said = "; ".join(f"{n}: {v}" for n, v in replaced.items())
            print(f"Kodak not found (PERCEPT_DATA has no kodak/): profile {profile} uses {said}")
    failures = 0
    with this_interpreter_kernel(root / "_build" / ".jupyter"):
        for i, name in enumerate(names, 1):
            failures += not run_one(root, name, sections[name], profile, f"[{i}/{len(names)}]")
    return 1 if failures else 0


def run_one(root: Path, name: str, parameters: dict, profile: str, counter: str) -> bool:
    """Execute one notebook with progress output; True when it ran without errors or warnings."""
    import papermill

    print(f"{counter} {name} (profile {profile}) ...", flush=True)
    start = time.perf_counter()
    try:
        output = run_notebook(root, name, parameters, profile)
    except papermill.PapermillExecutionError as exc:
        print(f"  FAILED in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", flush=True)
        print(f"  the partly executed notebook is {root / EXECUTED_DIR / name}.ipynb", flush=True)
        return False
    problems = notebook_problems(output)
    for problem in problems:
        print(f"  {problem}", flush=True)
    status = "FAILED (warnings above)" if problems else "ok"
    print(f"  {status} in {time.perf_counter() - start:.1f} s -> {output}", flush=True)
    return not problems


def jupyter_book_command() -> list[str]:
    """The jupyter-book of this interpreter's environment (not whichever is first on PATH)."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
    ]


def build(root: Path, profile: str, names: list[str] | None = None, skip_run: bool = False) -> int:
    """Run the notebooks (unless skip_run), then build the HTML book with warnings as errors."""
    in_toc = set(toc_files(root))
    not_in_toc = [n for n in source_notebooks(root) if str(EXECUTED_DIR / n) not in in_toc]
    if not_in_toc:
        raise PerceptError(
            f"notebooks missing from _toc.yml: add `- file: {EXECUTED_DIR}/NAME` for {not_in_toc}"
        )
    if not skip_run and run(root, profile, names) != 0:
        print("not building the book: a notebook failed", flush=True)
        return 1
    missing = [
        n for n in source_notebooks(root) if not (root / EXECUTED_DIR / f"{n}.ipynb").is_file()
    ]
    if missing:
        raise PerceptError(
            f"not executed yet: {missing}; run `python -m percept.cli.book run --profile {profile}`"
        )
    print("building the book (jupyter-book build -W -n --keep-going) ...", flush=True)
    start = time.perf_counter()
    # --all: a fresh Sphinx environment, so warnings from unchanged pages are reported again.
    cmd = [*jupyter_book_command(), "build", str(root), "--all", "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, cwd=root)
    html = root / "_build" / "html" / "index.html"
    if result.returncode != 0:
        print(
            f"book build FAILED (exit {result.returncode}) after {time.perf_counter() - start:.1f} s"
        )
        return 1
    print(f"book built in {time.perf_counter() - start:.1f} s: {html}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m percept.cli.book", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "command", choices=("run", "build"), help="run: execute notebooks; build: run + build"
    )
    parser.add_argument(
        "--profile", default="full", help="parameter profile in notebooks/params (default: full)"
    )
    parser.add_argument(
        "--notebooks", nargs="+", metavar="NAME", help="only these notebooks (default: all)"
    )
    parser.add_argument(
        "--skip-run", action="store_true", help="build: reuse the executed notebooks"
    )
    parser.add_argument(
        "--root", help="project root (default: the current folder or the source tree)"
    )
    args = parser.parse_args(argv)
    try:
        root = project_root(args.root)
        if args.command == "run":
            return run(root, args.profile, args.notebooks)
        return build(root, args.profile, args.notebooks, skip_run=args.skip_run)
    except PerceptError as exc:
        print(f"percept.cli.book: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
