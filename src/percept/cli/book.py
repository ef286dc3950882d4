"""Run the book's notebooks with papermill and build the Jupyter Book.

    python -m percept.cli.book run   --profile tiny|full [--notebooks 01_codecs ...]
    python -m percept.cli.book build --profile tiny|full [--notebooks ...] [--skip-run]

`run` executes each source notebook in `notebooks/` with the parameters of its section in
`notebooks/params/<profile>.yaml` and writes the executed copy to `book/notebooks/` (git-ignored).
`build` runs them and then builds the book with jupyter-book 1.x, warnings as errors (`-W -n
--keep-going`, as the Project Pythia and QuantEcon books do). `_config.yml` sets
`execute_notebooks: "off"`: papermill has already executed them.

Committed results. A profile with `committed_results: true` (the full one) keeps each chapter's
executed notebook in `results/<profile>/NAME.ipynb`, with its provenance (commit, package version,
machine, date, parameters, seconds). A later run reuses it instead of executing when its code cells
and parameters are those of the source notebook and profile now: prose edits (markdown cells) are
taken from the source, so changing a sentence rebuilds in minutes, while the glued numbers stay
those of the stored run. A stored notebook made by other code, other parameters or an older store
format is named with the reason and recomputed, and the new run replaces it; `--recompute`
(`make book RECOMPUTE=1`) recomputes every chapter. The parameters are compared with the profile's
values for the photos the stored run had (with or without Kodak), so a clone without the data
renders the committed results as they are.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import os
import re
import shutil
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
    for option in PROFILE_OPTIONS:
        sections.pop(option, None)
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
    # $VARIABLES in values (the paper-tiny profile's stand-in folders) mean the environment's
    return {name: {k: expand(v) for k, v in values.items()} for name, values in params.items()}


def expand(value):
    """`value` with $VARIABLE / ${VARIABLE} in its strings replaced from the environment."""
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def profile_options(root: Path, profile: str) -> dict:
    """A profile's top-level options (PROFILE_OPTIONS), which are not notebook sections."""
    import yaml

    sections = yaml.safe_load((root / "notebooks" / "params" / f"{profile}.yaml").read_text()) or {}
    return {k: sections[k] for k in PROFILE_OPTIONS if k in sections}


def keeps_results(root: Path, profile: str) -> bool:
    """Whether the profile keeps its executed notebooks in results/<profile>/ (`committed_results`)."""
    return bool(profile_options(root, profile).get(COMMITTED, False))


def prepare_standins(root: Path, profile: str) -> None:
    """For a profile with `standins: true`: write the stand-in models (percept.hub.standins) under
    _build/standins/ and point PERCEPT_STANDINS (the profile's $PERCEPT_STANDINS) and TORCH_HOME
    (where CompressAI's zoo finds its checkpoints) at them, for this process and its kernels."""
    if not profile_options(root, profile).get(STANDINS):
        return
    from percept.hub.standins import write_standins

    folder = root / "_build" / "standins"
    print(f"profile {profile}: writing stand-in models (random weights, real formats) to {folder}", flush=True)
    paths = write_standins(folder)
    os.environ["PERCEPT_STANDINS"] = str(folder)
    os.environ["TORCH_HOME"] = str(paths["torch_home"])


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


# Where the project lives: Colab opens its notebooks from here (percept.cli.colab clones it).
REPOSITORY = "https://github.com/percept-study/percept"
# An "Open in Colab" badge drawn inline (a data URI), so the page needs nothing from the network.
_BADGE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
    '<rect width="117" height="20" rx="3" fill="#444"/><rect x="22" width="95" height="20" rx="3" fill="#f9ab00"/>'
    '<circle cx="11" cy="10" r="5" fill="none" stroke="#f9ab00" stroke-width="2.5"/>'
    '<text x="69" y="14" font-family="Verdana,sans-serif" font-size="11" text-anchor="middle" fill="#000">'
    "Open in Colab</text></svg>"
)


def colab_url(notebook: str, repository: str = REPOSITORY, branch: str = "main") -> str:
    """The address that opens `notebooks/<notebook>.ipynb` of the repository in Colab."""
    slug = repository.removeprefix("https://github.com/").rstrip("/")
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook}.ipynb"


def colab_badge(notebook: str) -> str:
    """A line of inline HTML: the Colab badge (its SVG inside the page, so it shows offline) linking
    to the source notebook. HTML because MyST does not take a `data:` address as a Markdown image:
    it would print the whole address as link text."""
    data = base64.b64encode(_BADGE_SVG.encode()).decode()
    return (f'<a href="{colab_url(notebook)}"><img alt="Open in Colab" '
            f'src="data:image/svg+xml;base64,{data}"></a>')  # fmt: skip


# The store's format: bump when what a stored notebook must hold changes (older ones recompute).
STORE_FORMAT = "percept.book/1"
COMMITTED = "committed_results"
STANDINS = "standins"
PROFILE_OPTIONS = (COMMITTED, STANDINS)


def results_dir(root: Path, profile: str) -> Path:
    """Where a profile's executed notebooks are kept: `results/<profile>/`."""
    return root / "results" / profile


# Code cells with this tag set up an environment (the Colab install cell) and compute nothing here:
# they are left out of the comparison, and a reused run shows them unexecuted.
SETUP_TAG = "setup"


def computes(cell) -> bool:
    """Whether a code cell is part of the chapter's computation (not a setup or injected cell)."""
    tags = cell.metadata.get("tags", [])
    return cell.cell_type == "code" and SETUP_TAG not in tags and "injected-parameters" not in tags


def code_sources(nb) -> list[str]:
    """The sources of the code cells that compute (`computes`)."""
    return [c.source for c in nb.cells if computes(c)]


def reuse_problem(stored, source, expected: dict[bool, dict]) -> str | None:
    """Why the stored executed notebook cannot stand for `source` now (None when it can).

    `expected` maps "had Kodak" to the profile's parameters for this notebook with and without it."""
    meta = stored.metadata.get("percept", {})
    if meta.get("format") != STORE_FORMAT:
        return f"was stored in another format ({meta.get('format')!r}, now {STORE_FORMAT!r})"
    if code_sources(stored) != code_sources(source):
        return "was made by other code (the notebook's code cells changed since)"
    want = expected.get(bool(meta.get("kodak")))
    have = meta.get("parameters")
    if have != want:
        have, want = have or {}, want or {}
        changed = sorted(k for k in set(have) | set(want) if have.get(k, ...) != want.get(k, ...))
        return f"was made with other parameters ({', '.join(changed)})"
    return None


def splice(stored, source):
    """The stored notebook's code cells (with their outputs) among the source's markdown cells."""
    executed = iter([c for c in stored.cells if c.cell_type == "code" and SETUP_TAG not in c.metadata.get("tags", [])])
    cells = []
    for cell in source.cells:
        if not computes(cell):  # prose and setup cells: today's
            cells.append(copy.deepcopy(cell))
            continue
        taken = next(executed)
        if "injected-parameters" in taken.metadata.get("tags", []):
            cells.append(taken)
            taken = next(executed)
        taken = copy.deepcopy(taken)  # presentation (tags such as hide-input) is today's
        taken.metadata["tags"] = list(cell.metadata.get("tags", []))
        cells.append(taken)
    out = copy.deepcopy(stored)
    out.cells = cells
    return out


def provenance_note(meta: dict, reused_from: str | None) -> str:
    """The last paragraph of a rendered chapter: where its numbers come from."""
    commit = (meta.get("git_commit") or "unknown")[:10]
    seconds = meta.get("seconds")
    took = f" in {seconds / 60:.0f} min" if seconds and seconds >= 60 else f" in {seconds:.0f} s" if seconds else ""
    how = (
        f"This build reused them from `{reused_from}`; `make book RECOMPUTE=1` recomputes them."
        if reused_from
        else "This build computed them."
    )
    return (
        f"*Provenance: the outputs of this chapter were computed with profile `{meta.get('profile')}` on "
        f"{meta.get('date', 'an unknown date')} by percept {meta.get('percept')} (commit `{commit}`), "
        f"on {meta.get('cpu') or meta.get('device')}{took}. {how}*"
    )


def with_provenance(nb, reused_from: str | None, name: str | None = None):
    """A copy of an executed notebook as the book renders it: the provenance paragraph appended and,
    given the chapter's name, the Colab badge under its title."""
    import nbformat

    out = copy.deepcopy(nb)
    out.cells.append(nbformat.v4.new_markdown_cell(provenance_note(nb.metadata.get("percept", {}), reused_from)))
    first = next((c for c in out.cells if c.cell_type == "markdown"), None)
    if name and first is not None:
        lines = first.source.split("\n")
        at = 1 if lines and lines[0].startswith("# ") else 0
        first.source = "\n".join([*lines[:at], "", colab_badge(name), "", *lines[at:]])
    return out


def run_notebook(root: Path, name: str, parameters: dict, profile: str) -> Path:
    """Execute notebooks/<name>.ipynb into book/notebooks/<name>.ipynb; return the output path."""
    import nbformat
    import papermill


    source = root / "notebooks" / f"{name}.ipynb"
    output = root / EXECUTED_DIR / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
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
    nb.metadata["percept"] = {
        "format": STORE_FORMAT,
        "profile": profile,
        "parameters": parameters,
        "kodak": kodak_dir() is not None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.perf_counter() - start, 1),
        **environment(),
    }
    nbformat.write(nb, output)
    return output


def needed_downloads(sections: dict[str, dict]) -> list[str]:
    """The hub models (`hf:ID` values) and CompressAI zoo checkpoints (codec settings) that the
    given parameter sections use and this machine has not cached, when it cannot fetch them either:
    one line each. Empty when everything is here or can be downloaded."""
    from percept.codecs.compressai_codec import ZOO_QUALITIES, cached_checkpoint, zoo_reachable
    from percept.models.diffusers import cached, hub_reachable

    hub, zoo = set(), set()

    def walk(value) -> None:  # hub ids anywhere; {zoo codec: [qualities]} mappings anywhere
        if isinstance(value, str) and value.startswith("hf:"):
            hub.add(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k in ZOO_QUALITIES and isinstance(v, list):
                    zoo.update((k, q) for q in v)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for params in sections.values():
        walk(params)
        if params.get("codec") in ZOO_QUALITIES and "quality" in params:
            zoo.add((params["codec"], params["quality"]))
    missing = []
    hub_missing = sorted(h for h in hub if not cached(h.removeprefix("hf:")))
    if hub_missing and not hub_reachable():
        missing += [f"{h} (not in the Hugging Face cache; the hub cannot be reached)" for h in hub_missing]
    zoo_missing = sorted((n, q) for n, q in zoo if not cached_checkpoint(n, q).is_file())
    if zoo_missing and not zoo_reachable():
        for name in dict.fromkeys(n for n, _ in zoo_missing):
            qs = ", ".join(f"q{q}" for n, q in zoo_missing if n == name)
            missing.append(
                f"CompressAI {name} {qs} (not in {cached_checkpoint(name, 1).parent}; its server cannot be reached)"
            )
    return missing


def run(
    root: Path,
    profile: str,
    names: list[str] | None = None,
    *,
    recompute: bool = False,
    store: Path | None = None,
) -> int:
    """Execute the chosen notebooks (all by default), or reuse their stored runs; 0 when every one
    ran clean. `store`: the folder of stored runs (default: results/<profile>/ when the profile has
    `committed_results: true`, else none)."""
    if profile in {p.stem for p in (root / "notebooks" / "params").glob("*.yaml")}:
        prepare_standins(root, profile)
    sections = load_profile(root, profile)
    if store is None and keeps_results(root, profile):
        store = results_dir(root, profile)
    names = names or source_notebooks(root)
    unknown = [n for n in names if n not in sections]
    if unknown:
        raise PerceptError(f"unknown notebook(s) {unknown}: choose from {source_notebooks(root)}")
    missing = needed_downloads({n: sections[n] for n in names})
    if missing:  # before hours of chapters, not in the middle of one
        raise PerceptError(
            f"profile {profile} needs downloads this machine cannot make: {'; '.join(missing)}. "
            "Run it where the internet is reachable, or download them there and copy the caches here"
        )

    # Said for the chapters that are computed (a reused run keeps the photos it was made with).
    replaced = kodak_replacements(root, profile) if kodak_dir() is None else {}
    expected = expected_parameters(root, profile) if store else {}
    failures = 0
    with this_interpreter_kernel(root / "_build" / ".jupyter"):
        for i, name in enumerate(names, 1):
            counter = f"[{i}/{len(names)}]"
            if store and not recompute and reuse(root, name, store, {k: v[name] for k, v in expected.items()}, counter):
                continue
            if name in replaced:
                print(f"{counter} {name}: Kodak not found (PERCEPT_DATA has no kodak/): profile "
                      f"{profile} uses {replaced[name]}", flush=True)  # fmt: skip
            ok = run_one(root, name, sections[name], profile, counter)
            failures += not ok
            output = root / EXECUTED_DIR / f"{name}.ipynb"
            if ok and store:
                store.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(output, store / f"{name}.ipynb")
                print(f"  stored -> {store / f'{name}.ipynb'}", flush=True)
            if output.is_file():
                add_provenance(output, None, name)
    return 1 if failures else 0


def add_provenance(path: Path, reused_from: str | None, name: str | None = None) -> None:
    import nbformat

    nbformat.write(with_provenance(nbformat.read(path, as_version=4), reused_from, name), path)


def expected_parameters(root: Path, profile: str) -> dict[bool, dict[str, dict]]:
    """The profile's parameters per notebook for a stored run made with Kodak (True) and without."""
    return {kodak: load_profile(root, profile, kodak=kodak) for kodak in (True, False)}


def stored_run_problem(stored, source, stored_path: Path, expected: dict[bool, dict]) -> str | None:
    """Why the stored run (read from `stored_path`) cannot stand for `source` now (None when it
    can): `reuse_problem`, or errors and warnings in its outputs."""
    return reuse_problem(stored, source, expected) or (
        "has errors or warnings" if notebook_problems(stored_path) else None
    )


def reuse(root: Path, name: str, store: Path, expected: dict[bool, dict], counter: str) -> bool:
    """Write the stored run of `name` (with today's prose) to book/notebooks/ when it is still valid;
    False (after saying why) when the chapter must be computed."""
    import nbformat

    stored_path = store / f"{name}.ipynb"
    shown = os.path.relpath(stored_path, root)
    if not stored_path.is_file():
        print(f"{counter} {name}: no stored run in {os.path.relpath(store, root)}/, computing it", flush=True)
        return False
    stored = nbformat.read(stored_path, as_version=4)
    source = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    problem = stored_run_problem(stored, source, stored_path, expected)
    if problem:
        print(f"{counter} {name}: {shown} {problem}; recomputing it", flush=True)
        return False
    output = root / EXECUTED_DIR / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(with_provenance(splice(stored, source), shown, name), output)
    meta = stored.metadata["percept"]
    print(f"{counter} {name}: reused {shown} (computed {meta.get('date')}, commit {(meta.get('git_commit') or '?')[:10]})", flush=True)
    return True


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


def build(
    root: Path,
    profile: str,
    names: list[str] | None = None,
    skip_run: bool = False,
    *,
    recompute: bool = False,
    store: Path | None = None,
) -> int:
    """Run (or reuse) the notebooks unless skip_run, then build the HTML book with warnings as errors."""
    in_toc = set(toc_files(root))
    not_in_toc = [n for n in source_notebooks(root) if str(EXECUTED_DIR / n) not in in_toc]
    if not_in_toc:
        raise PerceptError(
            f"notebooks missing from _toc.yml: add `- file: {EXECUTED_DIR}/NAME` for {not_in_toc}"
        )
    if not skip_run and run(root, profile, names, recompute=recompute, store=store) != 0:
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
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="execute every chosen notebook even where a stored run is still valid (and store the new run)",
    )
    parser.add_argument(
        "--results",
        metavar="DIR",
        help="keep and reuse executed notebooks in DIR (default: results/<profile>/ for a profile "
        "with committed_results: true)",
    )
    args = parser.parse_args(argv)
    try:
        root = project_root(args.root)
        store = Path(args.results).resolve() if args.results else None
        if args.command == "run":
            return run(root, args.profile, args.notebooks, recompute=args.recompute, store=store)
        return build(
            root, args.profile, args.notebooks, skip_run=args.skip_run,
            recompute=args.recompute, store=store,
        )  # fmt: skip
    except PerceptError as exc:
        print(f"percept.cli.book: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
