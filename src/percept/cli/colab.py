"""Google Colab: what the setup cell of every chapter does there, and nothing anywhere else.

Each notebook has, right after its parameters cell, a code cell tagged `setup` (left out when the
book compares a stored run with its source, `percept.cli.book.SETUP_TAG`). On Colab it clones this
repository (when the notebook was opened from GitHub, percept is not installed yet), puts its
`src/` on the path, installs the dependencies that Colab lacks *beside Colab's own PyTorch* (the
project pins a CPU-tested torch pair; replacing Colab's CUDA build would cost gigabytes and a
restart), moves into `notebooks/` so the chapters' relative paths hold, and, when the runtime has a
GPU, returns the chapter's values of the `paper` profile, which the cell puts in place of the
parameters cell's. Under papermill or a local Jupyter the cell returns nothing and changes nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import torch

from percept.cli.book import REPOSITORY, load_profile

CHECKOUT = Path("/content/percept")
# Installed on Colab besides the dependencies: the notebooks glue their findings with myst-nb.
NOTEBOOK_EXTRAS = ("myst-nb", "pyyaml")
# Colab's runtime brings these (a CUDA build); the project's pins are for its own CPU machines.
COLAB_PROVIDES = ("torch", "torchvision")


def on_colab() -> bool:
    """Whether this Python runs in a Google Colab runtime."""
    return "google.colab" in sys.modules


def requirements(pyproject: Path) -> list[str]:
    """The project's dependencies without the ones Colab provides, plus the notebooks' extras."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    keep = [d for d in deps if name.match(d).group(0).lower() not in COLAB_PROVIDES]
    return [*keep, *NOTEBOOK_EXTRAS]


def setup(notebook: str, *, root: Path = CHECKOUT, run=subprocess.run) -> dict:
    """On Colab: install what the chapter needs and return its `paper` profile values when a GPU
    is present (else {}); elsewhere: {} and no side effect. `run` runs the install commands."""
    if not on_colab():
        return {}
    if not (root / "pyproject.toml").is_file():
        run(["git", "clone", "--depth", "1", REPOSITORY, str(root)], check=True)
    run([sys.executable, "-m", "pip", "install", "--quiet", *requirements(root / "pyproject.toml")], check=True)
    if str(root / "src") not in sys.path:
        sys.path.insert(0, str(root / "src"))
    os.chdir(root / "notebooks")
    if not torch.cuda.is_available():
        print("Colab without a GPU: this chapter runs with its own defaults (choose a GPU runtime for the paper profile)")
        return {}
    values = load_profile(root, "paper")[notebook]
    print(f"Colab GPU ({torch.cuda.get_device_name(0)}): profile paper for {notebook}: {values}")
    return values
