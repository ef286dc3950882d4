"""Shared fixtures; `slow` and `gpu` tests are skipped unless asked for.

Photographs. A fresh clone has no ../shared/data beside it, and the suite must pass there too, on
photos the installed packages ship (scikit-image's bundled photos; scikit-image is a dependency of
percept). So:

- `photos` gives each test its photographs: Kodak's when PERCEPT_DATA holds kodak/, else a
  scikit-image stand-in for each Kodak image a test names (`STAND_INS`), large enough for every
  crop the tests take. The code under test runs either way; a golden value or threshold that
  depends on the pixels is keyed by `photos.name(...)`.
- Training and calibration read the imagenet-sample folder. Without one under PERCEPT_DATA, the
  session points PERCEPT_DATA at a stand-in folder (`standin_imagenet`) of crops of scikit-image's
  photos, named and split like the sample (every 10th file held out), so the training tests train.
- Only tests about Kodak's own files (checksums, sizes, the papers' crop of them) ask for
  `kodak_dir` and skip without it, with one line naming what is missing.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from percept.errors import MetricUnavailable

ROOT = Path(__file__).resolve().parents[1]

if not os.environ.get("PERCEPT_DATA"):
    candidate = ROOT.parent / "shared" / "data"
    if candidate.is_dir():
        os.environ["PERCEPT_DATA"] = str(candidate)

# Kodak image -> the scikit-image photo that stands in for it, chosen so that the regions the tests
# crop hold what Kodak's do there (detail and colour, no clipped highlights): kodim23 (parrots,
# 512x768) -> rocket (427x640: the gantries at dusk); kodim01 (a textured door and wall) ->
# motorcycle_right (500x741: a cluttered garage). astronaut and coffee were tried first: their crops
# are too smooth or clipped for the JPEG-consistency and signalling tests' thresholds.
STAND_INS = {"kodim23": "rocket", "kodim01": "motorcycle_right"}
# Stand-in imagenet-sample: this many files; those at these positions are whole photos with a
# short side of 400 px or more (one in the train split; val positions 3, 7, 11 and 12, as the
# sample has large val photos both among its first 12 and after them), the others crops with a
# short side of 96-300 px.
STANDIN_FILES = 130
STANDIN_LARGE = (15, 30, 70, 110, 120)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    for marker, option in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(option) or marker in markexpr:
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with {option} or -m {marker}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_report_header(config):
    from percept.hub.data import imagenet_sample_paths, kodak_dir

    kodak = kodak_dir()
    imagenet = imagenet_sample_paths("all")
    return [
        f"photos: {f'Kodak from {kodak}' if kodak else 'no Kodak: scikit-image stand-ins'}; "
        + (
            f"imagenet-sample: {len(imagenet)} files"
            if imagenet
            else f"no imagenet-sample: a stand-in of {STANDIN_FILES} scikit-image crops"
        )
    ]


@functools.cache
def _standin_photos() -> dict[str, object]:
    """scikit-image's bundled colour photos as uint8 HxWx3 arrays (no download needed)."""
    from skimage import data as skdata

    from percept.hub.data import SKIMAGE_PHOTOS

    photos = {name: getattr(skdata, name)() for name in SKIMAGE_PHOTOS}
    left, right, _ = skdata.stereo_motorcycle()
    photos["motorcycle_left"], photos["motorcycle_right"] = left, right
    return photos


def make_standin_imagenet(folder: Path) -> list[Path]:
    """Write STANDIN_FILES JPEGs to folder (the imagenet-sample layout: one flat folder, sorted
    names) cut from scikit-image's photos: random crops at native resolution (no resampling), a
    random half of them mirrored, and whole photos at STANDIN_LARGE. Deterministic (seed 0)."""
    import numpy as np
    from PIL import Image

    photos = _standin_photos()
    names = sorted(photos)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(STANDIN_FILES):
        name = names[i % len(names)]
        arr = photos[name]
        h, w = arr.shape[:2]
        if i in STANDIN_LARGE:
            name = next(
                n for n in names[i % len(names) :] + names if min(photos[n].shape[:2]) >= 400
            )
            crop = photos[name]
        else:
            short = int(rng.integers(96, 301))
            long_ = min(int(short * rng.uniform(1.0, 1.5)), max(h, w))
            ch, cw = (short, long_) if rng.random() < 0.7 else (long_, short)
            ch, cw = min(ch, h), min(cw, w)
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = arr[top : top + ch, left : left + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        path = folder / f"s{i:04d}_{name}.JPEG"
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="session", autouse=True)
def standin_imagenet(tmp_path_factory):
    """PERCEPT_DATA for the session: unchanged when it holds imagenet-sample/, else a folder with a
    stand-in imagenet-sample/ (and the given kodak/, when there is one, linked beside it)."""
    from percept.hub.data import data_root, imagenet_sample_paths

    if imagenet_sample_paths("all"):
        yield None
        return
    root = tmp_path_factory.mktemp("percept-data")
    make_standin_imagenet(root / "imagenet-sample")
    given = data_root()
    if given is not None and (given / "kodak").is_dir():
        (root / "kodak").symlink_to((given / "kodak").resolve(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERCEPT_DATA", str(root))
        yield root


class Photos:
    """The suite's photographs: Kodak's when PERCEPT_DATA holds kodak/, else scikit-image stand-ins."""

    def __init__(self):
        from percept.hub.data import kodak_dir

        self.kodak = kodak_dir()

    @property
    def source(self) -> str:
        return f"Kodak ({self.kodak})" if self.kodak else "scikit-image (no Kodak)"

    def name(self, kodak_name: str) -> str:
        """The name of the photo that `image(kodak_name)` returns."""
        return kodak_name if self.kodak else STAND_INS[kodak_name]

    def image(self, kodak_name: str):
        """[1,3,H,W] in [0,1]: the Kodak image, or its stand-in (a 3-channel uint8 photo / 255, as
        `percept.core.images.load_image` gives a PNG)."""
        import numpy as np
        import torch

        from percept.core.images import load_image

        if self.kodak:
            return load_image(self.kodak / f"{kodak_name}.png")[0]
        arr = np.ascontiguousarray(_standin_photos()[STAND_INS[kodak_name]])
        return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0

    def dataset(self) -> str:
        """A `percept.hub.datasets` name of a set of several photos: the Kodak folder or 'skimage'."""
        return str(self.kodak) if self.kodak else "skimage"


@pytest.fixture(scope="session")
def photos(standin_imagenet) -> Photos:
    return Photos()


@pytest.fixture(scope="session")
def photo(photos):
    """The suite's main photo: kodim23, or rocket without Kodak."""
    return photos.image("kodim23")


@pytest.fixture(scope="session")
def kodak_dir(standin_imagenet) -> Path:
    """Kodak's folder, for the tests about Kodak's own files; they skip without it."""
    from percept.hub.data import kodak_dir as find

    folder = find()
    if folder is None:
        pytest.skip("Kodak not found: set PERCEPT_DATA to a folder with kodak/kodim01.png ...")
    return folder


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small tensor ops lose most of their time to thread
    contention on a shared 2-core machine, and bit-exact comparisons need one reduction order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sweep_setup(photo):
    """Two 64 px crops, JPEG q10 and an untrained tiny prior: what the sweep tests run on."""
    import torch

    from percept.codecs import get_codec
    from percept.models import EDMDenoiser, UNet, UNetConfig

    images = {"a": photo[..., :64, :64], "b": photo[..., 200:264, 300:364]}
    torch.manual_seed(0)
    tiny = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)
    return images, get_codec("jpeg", 10), EDMDenoiser(UNet(tiny)).eval()


def _deep_metrics_offline(mp: pytest.MonkeyPatch) -> None:
    import percept.metrics as deep  # the names the results module calls

    def unavailable(*args, **kwargs):
        raise MetricUnavailable("weights not cached (test)")

    mp.setattr(deep, "lpips", unavailable)
    mp.setattr(deep, "fid", unavailable)


@pytest.fixture
def offline_deep_metrics(monkeypatch):
    """LPIPS/FID as they behave here without weights, without waiting for a failed download."""
    _deep_metrics_offline(monkeypatch)


@pytest.fixture(scope="module")
def offline_deep_metrics_for_module():
    """`offline_deep_metrics` for a module-scoped fixture that runs the harness once."""
    with pytest.MonkeyPatch.context() as mp:
        _deep_metrics_offline(mp)
        yield
