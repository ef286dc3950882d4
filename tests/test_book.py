"""The book pipeline: every notebook runs on the tiny profile and the book builds with -W.

The build runs in a copy of the book's sources under tmp_path, so a test run never touches the
working tree's book/notebooks/ or _build/.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from percept.cli import book
from percept.errors import PerceptError

ROOT = Path(__file__).resolve().parents[1]


def copy_book_sources(dest: Path) -> Path:
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("_build", "notebooks", ".ipynb_checkpoints")
    shutil.copytree(ROOT / "book", dest / "book", ignore=skip)
    shutil.copytree(
        ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    # the committed results files the claims chapter reads (not the images of their runs)
    shutil.copytree(ROOT / "results", dest / "results", ignore=shutil.ignore_patterns("*.images", "*.log"))
    return dest


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    root = copy_book_sources(tmp_path_factory.mktemp("book"))
    assert book.main(["build", "--profile", "tiny", "--root", str(root)]) == 0
    return root


def test_every_notebook_runs_clean_with_the_tiny_profile(built_book):
    names = book.source_notebooks(built_book)
    assert names, "no notebooks found"
    tiny = book.load_profile(built_book, "tiny")  # with its without_kodak values when no Kodak
    for name in names:
        path = built_book / "book" / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        assert book.notebook_problems(path) == []
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        # House style: every chapter has a figure, and it ran with the profile's parameters.
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} has no figure"
        assert nb.metadata["papermill"]["parameters"] == tiny[name]
        assert nb.metadata["percept"]["profile"] == "tiny"
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert ["parameters"] in tags and ["injected-parameters"] in tags


def test_the_book_has_a_page_per_toc_entry(built_book):
    html = built_book / "_build" / "html"
    assert (html / "index.html").is_file()
    for entry in book.toc_files(built_book):
        page = html / f"{entry}.html"
        assert page.is_file(), f"missing {page}"
        assert "<h1" in page.read_text()
    for name in book.source_notebooks(built_book):
        text = (html / "book" / "notebooks" / f"{name}.html").read_text()
        assert "<img" in text, f"{name}: no figure in the HTML"
    # The sources and the rest of the repository are not rendered.
    assert not (html / "notebooks").exists()
    assert not (html / "README.html").exists()


def test_the_python3_kernel_is_this_interpreter(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    # Even a user-level python3 kernelspec for another Python must lose.
    other = tmp_path / "other" / "kernels" / "python3"
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(
        json.dumps({"argv": ["/usr/bin/python3"], "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "other"))
    with book.this_interpreter_kernel(tmp_path / "mine"):
        assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/usr/bin/python3"


def test_profiles_must_cover_every_notebook(tmp_path):
    root = copy_book_sources(tmp_path)
    for profile in ("tiny", "full"):
        assert set(book.load_profile(root, profile)) == set(book.source_notebooks(root))
    (root / "notebooks" / "params" / "broken.yaml").write_text("not_a_notebook: {}\n")
    with pytest.raises(PerceptError, match="missing"):
        book.load_profile(root, "broken")
    with pytest.raises(PerceptError, match="unknown profile"):
        book.load_profile(root, "nope")


def test_a_profile_replaces_kodak_where_it_is_missing(tmp_path):
    root = copy_book_sources(tmp_path)
    with_kodak = book.load_profile(root, "tiny", kodak=True)
    without = book.load_profile(root, "tiny", kodak=False)
    assert with_kodak["05_failure_cases"]["low_rate_images"] == ["kodim01"]
    assert without["05_failure_cases"]["low_rate_images"] == ["coffee"]
    assert (
        without["06_main_tables"]["dataset"] == "skimage"
        and "dataset" not in with_kodak["06_main_tables"]
    )
    assert book.kodak_replacements(root, "tiny") == {
        "05_failure_cases": {"low_rate_images": ["coffee"], "level_dataset": "skimage"},
        "06_main_tables": {"dataset": "skimage"},
        "07_latent_fusion": {"dataset": "skimage"},
    }
    params = root / "notebooks" / "params"
    text = (params / "tiny.yaml").read_text()
    (params / "odd.yaml").write_text(text + "  99_no_such_chapter: {}\n")
    with pytest.raises(PerceptError, match="without_kodak must map notebook names"):
        book.load_profile(root, "odd")


def test_warnings_and_errors_in_outputs_are_problems(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="rd sweep: 100%|####| 4/4\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a.py:3: FutureWarning: old API\n"),
        nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[]),
    ]
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    problems = book.notebook_problems(path)
    assert problems == ["cell 0: a.py:3: FutureWarning: old API", "cell 0: ValueError: bad"]


def test_every_notebook_is_in_the_toc():
    in_toc = set(book.toc_files(ROOT))
    for name in book.source_notebooks(ROOT):
        assert f"book/notebooks/{name}" in in_toc


def test_a_browser_sees_every_page_load_clean(built_book):
    """Every page of the tiny book in headless Chromium: no script error in the console, every
    figure loaded and non-empty, no error output cell. Screenshots go to out/book-shots/ for a
    person to look at."""
    from percept.cli import browse

    if browse.browser() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium): the book was not looked at")
    shots = ROOT / "out" / "book-shots"
    pages, problems = browse.check_book(built_book / "_build" / "html", shots)
    assert len(pages) >= len(book.toc_files(built_book))
    assert problems == []
    for page in pages:
        shot = shots / page.relative_to(built_book / "_build" / "html").with_suffix(".png")
        assert shot.stat().st_size > 10_000, f"{shot} is nearly empty"


@pytest.fixture(scope="module")
def paper_tiny_run(tmp_path_factory) -> Path:
    """Every chapter through the `paper` profile's code path, on stand-in models (issue 24)."""
    root = copy_book_sources(tmp_path_factory.mktemp("paper-tiny"))
    with pytest.MonkeyPatch.context() as mp:  # the run points these at its stand-ins; restore them
        for name in ("PERCEPT_STANDINS", "TORCH_HOME"):
            mp.setenv(name, "unset")
        assert book.main(["run", "--profile", "paper-tiny", "--root", str(root), "--notebooks", *PAPER_CHAPTERS]) == 0
    return root


# The chapters whose paper-tiny section differs from the tiny profile's; the others run with the
# tiny profile's very parameters in `built_book` (checked below), so running them again adds nothing.
PAPER_CHAPTERS = ["02_sigma_sweep", "04_presets", "06_main_tables"]


def test_every_chapter_runs_the_paper_code_path_on_stand_in_models(paper_tiny_run):
    profile = book.load_profile(paper_tiny_run, "paper-tiny")
    tiny = book.load_profile(paper_tiny_run, "tiny")
    assert sorted(n for n in profile if profile[n] != tiny[n]) == PAPER_CHAPTERS
    for name in PAPER_CHAPTERS:
        path = paper_tiny_run / "book" / "notebooks" / f"{name}.ipynb"
        assert book.notebook_problems(path) == [], name
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["percept"]["profile"] == "paper-tiny"
        text = "".join(
            o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
        )
        # each loads a stand-in prior and a stand-in CompressAI codec, and says so
        assert "stand-in weights" in text and "mbt2018-mean" in text, name
    assert "ddpm-ema-bedroom-256" in str(profile["02_sigma_sweep"]["prior"])


def test_glued_paragraphs_use_the_block_directive():
    """A `{glue:md}` role alone on its line glues block Markdown (a list of findings) inline, where
    the list markers become text; such a value must be glued with the ```{glue:md}``` directive."""
    alone = re.compile(r"^\s*\{glue:md\}`[^`]+`\s*$", re.M)
    root = book.project_root()
    for name in book.source_notebooks(root):
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                found = alone.search(cell.source)
                assert not found, f"{name}: {found.group(0).strip()}"
