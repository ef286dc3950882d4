"""Committed results of the book: a chapter's stored run is reused while its code and parameters
stand, with today's prose, and recomputed (saying why) when they do not."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from percept.cli import book

TOC = "format: jb-book\nroot: intro\nchapters:\n  - file: book/notebooks/a\n"


def make_project(root, *, x=3, text="Old sentence.", code="print('out', x * 2)"):
    (root / "notebooks" / "params").mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text(TOC)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# A\n\n{text}"), params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "a.ipynb")
    (root / "notebooks" / "params" / "p.yaml").write_text(f"committed_results: true\na: {{x: {x}}}\n")
    return root


def outputs(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def markdown(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path / "no-data"))  # the same photos every run
    return make_project(tmp_path)


def test_a_stored_run_is_reused_with_new_prose_and_recomputed_when_its_parameters_change(project, capsys):
    stored = project / "results" / "p" / "a.ipynb"
    rendered = project / "book" / "notebooks" / "a.ipynb"
    assert book.run(project, "p") == 0
    assert "out 6" in outputs(stored) and "out 6" in outputs(rendered)
    meta = nbformat.read(stored, as_version=4).metadata["percept"]
    assert meta["format"] == book.STORE_FORMAT and meta["parameters"] == {"x": 3}
    assert {"date", "seconds", "git_commit", "percept", "kodak"} <= set(meta)
    assert "This build computed them" in markdown(rendered)
    assert "Provenance" not in markdown(stored)  # the note is added to the rendered copy only

    # Mark the stored output: a reuse keeps it (nothing executes), and takes the prose of today.
    nb = nbformat.read(stored, as_version=4)
    nb.cells[-1].outputs[0]["text"] = "out SENTINEL\n"
    nbformat.write(nb, stored)
    make_project(project, text="New sentence.")
    source = nbformat.read(project / "notebooks" / "a.ipynb", as_version=4)
    source.cells[-1].metadata["tags"] = ["hide-input"]  # presentation: not a reason to recompute
    nbformat.write(source, project / "notebooks" / "a.ipynb")
    capsys.readouterr()
    assert book.run(project, "p") == 0
    said = capsys.readouterr().out
    assert "reused results/p/a.ipynb" in said
    assert "out SENTINEL" in outputs(rendered)
    assert "New sentence." in markdown(rendered) and "Old sentence." not in markdown(rendered)
    assert "reused them from `results/p/a.ipynb`" in markdown(rendered)
    # the injected-parameters cell is kept in place
    tags = [c.metadata.get("tags", []) for c in nbformat.read(rendered, as_version=4).cells]
    assert tags[1:4] == [["parameters"], ["injected-parameters"], ["hide-input"]]

    # Other parameters: said, recomputed, stored anew.
    make_project(project, x=4, text="New sentence.")
    assert book.run(project, "p") == 0
    said = capsys.readouterr().out
    assert "was made with other parameters (x); recomputing it" in said
    assert "out 8" in outputs(stored) and "out 8" in outputs(rendered)


def test_changed_code_or_recompute_executes_again(project, capsys):
    stored = project / "results" / "p" / "a.ipynb"
    assert book.run(project, "p") == 0
    make_project(project, code="print('other', x)")
    capsys.readouterr()
    assert book.run(project, "p") == 0
    assert "was made by other code" in capsys.readouterr().out
    assert "other 3" in outputs(stored)
    nb = nbformat.read(stored, as_version=4)
    nb.cells[-1].outputs[0]["text"] = "SENTINEL\n"
    nbformat.write(nb, stored)
    assert book.run(project, "p", recompute=True) == 0
    assert "other 3" in outputs(stored)


def test_a_profile_without_committed_results_stores_nothing(project):
    (project / "notebooks" / "params" / "p.yaml").write_text("a: {x: 2}\n")
    assert book.run(project, "p") == 0
    assert not (project / "results").exists()


def test_parameters_are_compared_for_the_photos_the_stored_run_had():
    source = nbformat.v4.new_notebook()
    source.cells = [nbformat.v4.new_code_cell("y = 1")]
    stored = nbformat.v4.new_notebook()
    stored.cells = [nbformat.v4.new_code_cell("y = 1")]
    stored.metadata["percept"] = {"format": book.STORE_FORMAT, "kodak": True, "parameters": {"d": "kodak"}}
    expected = {True: {"d": "kodak"}, False: {"d": "skimage"}}
    # a machine without Kodak still renders the Kodak run as stored
    assert book.reuse_problem(stored, source, expected) is None
    stored.metadata["percept"]["kodak"] = False
    assert "other parameters (d)" in book.reuse_problem(stored, source, expected)
    stored.metadata["percept"]["format"] = "percept.book/0"
    assert "another format" in book.reuse_problem(stored, source, expected)


def test_a_setup_cell_added_later_keeps_the_stored_run(project, capsys):
    assert book.run(project, "p") == 0
    path = project / "notebooks" / "a.ipynb"
    nb = nbformat.read(path, as_version=4)
    setup = nbformat.v4.new_code_cell("print('setting up')")
    setup.metadata["tags"] = [book.SETUP_TAG]
    nb.cells.insert(1, setup)
    nbformat.write(nb, path)
    capsys.readouterr()
    assert book.run(project, "p") == 0
    assert "reused" in capsys.readouterr().out
    rendered = nbformat.read(project / "book" / "notebooks" / "a.ipynb", as_version=4)
    assert [c.source for c in rendered.cells if c.cell_type == "code"][0] == "print('setting up')"
    assert "out 6" in outputs(project / "book" / "notebooks" / "a.ipynb")


def test_the_rendered_chapter_has_a_colab_badge_for_its_source_notebook(project):
    assert book.run(project, "p") == 0
    rendered = markdown(project / "book" / "notebooks" / "a.ipynb")
    assert rendered.startswith(f'# A\n\n<a href="{book.colab_url("a")}"><img alt="Open in Colab" src="data:image/svg+xml;base64,')
    assert book.colab_url("a").endswith("/blob/main/notebooks/a.ipynb")
    assert "Open in Colab" not in markdown(project / "results" / "p" / "a.ipynb")


def test_the_colab_cell_does_nothing_elsewhere_and_installs_and_picks_the_paper_profile_there(
    tmp_path, monkeypatch, capsys
):
    import sys
    import types

    import torch

    from percept.cli import colab

    calls = []
    assert colab.setup("02_sigma_sweep", root=tmp_path, run=lambda *a, **k: calls.append(a)) == {}
    assert calls == []  # not on Colab: nothing run, nothing changed

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert colab.setup("02_sigma_sweep", root=root, run=lambda cmd, **k: calls.append(cmd)) == {}
    install = calls[-1]
    assert install[1:4] == ["-m", "pip", "install"]
    assert not any(r.startswith(("torch==", "torchvision==")) for r in install)  # Colab's own torch stays
    assert any(r.startswith("compressai") for r in install) and "myst-nb" in install
    assert Path.cwd() == root / "notebooks"
    assert "without a GPU" in capsys.readouterr().out

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    values = colab.setup("02_sigma_sweep", root=root, run=lambda cmd, **k: calls.append(cmd))
    assert values == book.load_profile(root, "paper")["02_sigma_sweep"]
    assert values["prior"].startswith("hf:")


def test_the_committed_full_runs_stand_for_every_chapter_as_it_is_now():
    """`make book` renders from results/full/ without computing: every chapter has a stored run whose
    code cells and parameters are today's and which holds no error or warning. Fails when a
    notebook's code or the full profile changed without `make book RECOMPUTE=1` (or one chapter's
    `--recompute`) and a commit of the new run."""
    root = book.project_root()
    store = book.results_dir(root, "full")
    expected = book.expected_parameters(root, "full")
    stale = {}
    for name in book.source_notebooks(root):
        path = store / f"{name}.ipynb"
        if not path.is_file():
            stale[name] = "no stored run"
            continue
        stored = nbformat.read(path, as_version=4)
        source = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        stale[name] = book.stored_run_problem(stored, source, path, {k: v[name] for k, v in expected.items()})
    assert not {k: v for k, v in stale.items() if v}, stale


# a glue reference in MyST: a role {glue:text}`name:fmt` (or `doc::name:fmt`) or a directive block
# ```{glue:md} name (with an optional `:doc: path` line)
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`")
GLUE_BLOCK = re.compile(r"```\{glue(?::\w+)?\}[ \t]+(\S+)[ \t]*\n(?::doc:[ \t]+(\S+))?")


def glue_references(text: str, here: str) -> set[tuple[str, str]]:
    """(document, name) of every glued value `text` shows; `here` is the document it is in."""
    refs = set()
    for content in GLUE_ROLE.findall(text):
        doc, _, rest = content.rpartition("::")
        refs.add((doc or here, rest.split(":")[0]))
    for name, doc in GLUE_BLOCK.findall(text):
        refs.add((doc or here, name))
    return refs


def test_glue_references_are_read_from_roles_and_blocks():
    text = ("SWD {glue:text}`swd:.1f` and {glue:md}`best`; {glue:text}`notebooks/b.ipynb::n:s`.\n"
            "```{glue:md} lines\n:format: myst\n```\n```{glue} fig\n:doc: notebooks/c.ipynb\n```\n")  # fmt: skip
    assert glue_references(text, "notebooks/a.ipynb") == {
        ("notebooks/a.ipynb", "swd"), ("notebooks/a.ipynb", "best"), ("notebooks/b.ipynb", "n"),
        ("notebooks/a.ipynb", "lines"), ("notebooks/c.ipynb", "fig"),
    }  # fmt: skip


def test_the_committed_full_runs_hold_every_value_the_prose_glues():
    """A stored run stays valid while its code cells stand, but the prose (today's) or a library
    function behind a glue cell may name a value the stored run never glued; the book build would
    then fail on that name. Every chapter's and the introduction's references must be in the runs."""
    from percept.eval.claims import chapter_records

    root = book.project_root()
    store = book.results_dir(root, "full")
    refs = glue_references((root / "book" / "intro.md").read_text(), "intro")
    for name in book.source_notebooks(root):
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        refs |= glue_references(text, f"notebooks/{name}.ipynb")
    assert all(doc != "intro" for doc, _ in refs), "the introduction glues only from chapters"
    glued = {doc: set(chapter_records(store / Path(doc).name)) for doc in {d for d, _ in refs}}
    missing = sorted(f"{doc}::{name}" for doc, name in refs if name not in glued[doc])
    assert not missing, f"not glued by the stored runs (recompute those chapters): {missing}"


def test_every_setup_cell_clones_the_repository_the_badges_point_at():
    """The repository's address is written in each notebook's setup cell (it runs before percept is
    installed) and in `book.REPOSITORY` (badges, `colab.setup`): moving the project means changing
    both, and this test says where one was missed."""
    root = book.project_root()
    for name in book.source_notebooks(root):
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        setup = [c for c in nb.cells if book.SETUP_TAG in c.metadata.get("tags", [])]
        assert len(setup) == 1, f"{name}: {len(setup)} setup cells"
        assert f'"{book.REPOSITORY}"' in setup[0].source, f"{name}: its setup cell clones another repository"
