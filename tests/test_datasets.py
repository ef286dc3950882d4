"""Datasets: Kodak checksums, crop protocols, folders, offline behaviour."""

from __future__ import annotations

import time

import pytest
import torch

from percept.core.images import save_png
from percept.errors import PerceptError
from percept.hub import datasets


def test_kodak_files_match_stored_checksums(kodak_dir):
    assert len(datasets.KODAK_SHA256) == 24
    assert datasets.verify_kodak(kodak_dir) == []


def test_load_kodak_with_the_papers_center_crop(kodak_dir):
    items = datasets.load_dataset("kodak", crop="center256", limit=4)
    assert [it.name for it in items] == ["kodim01", "kodim02", "kodim03", "kodim04"]
    assert all(it.image.shape == (1, 3, 256, 256) for it in items)
    full = datasets.load_dataset("kodak", limit=4)
    assert full[0].image.shape == (1, 3, 512, 768) and full[3].image.shape == (1, 3, 768, 512)
    crop = datasets.apply_crop(full[0].image, "crop256")
    assert torch.equal(crop, full[0].image[..., 128:384, 256:512])


def test_center_crop_scales_the_short_edge():
    x = torch.zeros(1, 3, 100, 300)
    x[..., :, 100:200] = 1.0  # the middle third is white
    y = datasets.apply_crop(x, "center50")
    assert y.shape == (1, 3, 50, 50)
    assert y[..., :, 2:48].min() > 0.99  # 300 -> 150 wide: the white band is the central 50 px
    with pytest.raises(PerceptError, match="smaller"):
        datasets.apply_crop(x, "crop200")
    with pytest.raises(PerceptError, match="unknown crop"):
        datasets.apply_crop(x, "middle")


def test_folder_skimage_and_imagenet_sample(tmp_path):
    for i in range(3):
        save_png(torch.full((1, 3, 8, 10), i / 4), tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    items = datasets.load_dataset(str(tmp_path))
    assert [it.name for it in items] == ["img0", "img1", "img2"]
    assert items[2].image.mean().item() == pytest.approx(round(0.5 * 255) / 255)
    photos = datasets.load_dataset("skimage", crop="center64", limit=2)
    assert [p.name for p in photos] == ["astronaut", "coffee"] and photos[1].image.shape == (
        1,
        3,
        64,
        64,
    )
    from percept.hub.data import imagenet_sample_paths

    val = datasets.load_dataset("imagenet-sample", limit=2)  # the sample, or the suite's stand-in
    assert [v.name for v in val] == [p.stem for p in imagenet_sample_paths("val")[:2]]
    with pytest.raises(PerceptError, match="unknown dataset"):
        datasets.load_dataset("no-such-set")


def test_kodak_download_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("PERCEPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "KODAK_URL", "http://127.0.0.1:9/{name}")
    start = time.monotonic()
    with pytest.raises(PerceptError, match="cannot download Kodak"):
        datasets.load_dataset("kodak")
    assert time.monotonic() - start < 15


def test_kodak_download_rejects_wrong_bytes(tmp_path, monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"not kodak"

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(PerceptError, match="SHA-256"):
        datasets.download_kodak(tmp_path)
    assert not (tmp_path / "kodim01.png").exists()


def test_named_image_loads_out_of_domain_images():
    from percept.hub.data import SKIMAGE_OUT_OF_DOMAIN, named_image

    for name in SKIMAGE_OUT_OF_DOMAIN:
        image = named_image(name)
        assert image.shape[:2] == (1, 3) and 0 <= image.min() and image.max() <= 1
    with pytest.raises(PerceptError, match="unknown scikit-image image"):
        named_image("nonesuch")


def test_named_image_loads_kodak_images(kodak_dir):
    from percept.hub.data import named_image

    assert named_image("kodim23").shape == (1, 3, 512, 768)


def test_named_image_says_what_is_missing_without_kodak(tmp_path, monkeypatch):
    from percept.hub.data import named_image

    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path))
    with pytest.raises(PerceptError, match="kodim23 not found: set PERCEPT_DATA"):
        named_image("kodim23")


def test_image_panel_draws_one_axis_per_image():
    import matplotlib

    matplotlib.use("Agg")
    from percept.eval.plots import image_panel

    fig = image_panel(
        {"a": torch.zeros(1, 3, 8, 8), "b": torch.ones(3, 8, 8), "c": torch.rand(3, 4, 4)}, ncols=2
    )
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["a", "b", "c"]
