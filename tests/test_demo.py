"""`percept demo`: one photo coded at a low rate, decoded plainly, through the enhancer and through
paper 2's latent fusion, in one
labelled picture. Run here on a 128x192 crop of the suite's photo, so that it takes seconds."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from percept.cli import main

ROW = re.compile(r"^(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) \+- ([\d.]+)$", re.M)


@pytest.fixture
def small_photo(photo, monkeypatch):
    x = photo[..., 64:192, 128:320].contiguous()
    monkeypatch.setattr("percept.hub.data.demo_photo", lambda: (x, "a test crop"))
    return x


def _rows(printed: str) -> list[tuple[str, float, float, float, float]]:
    return [(m[0].strip(), *map(float, m[1:])) for m in ROW.findall(printed)]


def test_demo_codes_decodes_enhances_and_labels_every_panel(small_photo, tmp_path, capsys):
    from percept.enhancer.table import lookup_sigma

    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--panel", "96"]) == 0
    printed = capsys.readouterr().out
    sigma = {
        q: lookup_sigma(c, q, "percept-cm-s", "fast")
        for c, q in [("percept-hyperprior", 1), ("jpeg", 5)]
    }
    rows = _rows(printed)
    assert [r[0] for r in rows] == [
        "percept-hyperprior q1",
        f"+ enhancer, sigma {sigma[1]:.2f}",
        "+ latent fusion, tau 1",  # paper 2: the learned codec only (JPEG has no latents)
        "jpeg q5",
        f"+ enhancer, sigma {sigma[5]:.2f}",
    ]
    assert rows[2][1] == rows[0][1] and rows[2][2] != rows[0][2]  # same file, another decode
    for decoded, enhanced in (rows[0:2], rows[3:5]):
        assert 0 < decoded[1] == enhanced[1] < 1.0  # the same file: the enhancer adds no bits
        # noise then one denoising step moves the image away from the decode: the PSNR drops
        # (by 3 dB on the calibration set, where the table's sigma doubles the MSE)
        assert enhanced[2] < decoded[2]
        assert decoded[3] != enhanced[3] and decoded[4] > 0
    assert re.search(r"^original\s+[\d.]+ \+- [\d.]+$", printed, re.M)  # the SWD floor
    assert len(re.findall(r"^\s+[\d.]+ s  ", printed, re.M)) == 6  # every step timed
    assert printed.rstrip().endswith(f"-> {out}")
    with Image.open(out) as img:
        assert img.width == 6 * 96 + 5 * 6 and img.height > 96 + 64


def test_a_method_joins_the_picture_where_it_applies(small_photo, tmp_path, capsys, monkeypatch):
    """The hook a later decoder (paper 2's fusion) uses: a function in METHODS, None where it
    does not apply."""
    from percept.cli import demo

    def learned_only(coded):
        return None if coded.codec == "jpeg" else (coded.x_hat.flip(-1), "mirrored decode")

    monkeypatch.setitem(demo.METHODS, "mirror", learned_only)
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--panel", "96", "--methods", "decode", "mirror"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["percept-hyperprior q1", "mirrored decode", "jpeg q5"]
    with Image.open(out) as img:
        assert img.width == 4 * 96 + 3 * 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "nonesuch"], "unknown demo method"),
        (["--zoom", "left"], "--zoom expects TOP,LEFT"),
        (["--zoom", "100,0", "--panel", "96"], "inside the 192x128 photo"),
        (["--panel", "20"], "--panel must be at least"),
    ],
)
def test_bad_demo_options_say_what_is_wrong(small_photo, tmp_path, capsys, args, message):
    assert main(["demo", "--out", str(tmp_path / "d.png"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()
