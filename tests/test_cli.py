"""`percept encode | decode | info | codecs`, and bad input: exit 2, one line, no file left."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from percept.cli import main
from percept.core.images import load_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def photo(photos, tmp_path):
    """A 67x91 crop of the suite's main photo as a PNG (odd size on purpose)."""
    from percept.core.images import save_png

    path = tmp_path / "crop.png"
    save_png(photos.image("kodim23")[..., 100:167, 200:291], path)
    return path


@pytest.fixture()
def encoded(photo, tmp_path):
    out = tmp_path / "crop.prcp"
    assert main(["encode", str(photo), str(out), "--codec", "jpeg", "--quality", "40"]) == 0
    return out


def test_encode_info_decode(photo, tmp_path, capsys):
    out = tmp_path / "a.prcp"
    assert main(["encode", str(photo), str(out), "--codec", "webp", "--quality", "30"]) == 0
    printed = capsys.readouterr().out
    size = out.stat().st_size
    assert f"{size} bytes" in printed
    assert f"{8 * size / (67 * 91):.4f} bpp" in printed
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "codec:    webp" in info and "91x67" in info and "ok" in info and f"{size} " in info
    png = tmp_path / "a.png"
    assert main(["decode", str(out), str(png)]) == 0
    x, notes = load_image(png)
    assert x.shape == (1, 3, 67, 91) and notes == []
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_encode_converts_other_modes_and_says_so(photo, tmp_path, capsys, mode):
    src = tmp_path / f"in-{mode.replace(';', '')}.png"
    img = Image.open(photo)
    if mode == "I;16":
        arr = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(arr).save(src)
    else:
        img.convert(mode).save(src)
    assert main(["encode", str(src), str(tmp_path / "o.prcp"), "--quality", "50"]) == 0
    assert "note:" in capsys.readouterr().err


def test_codecs_table(capsys):
    assert main(["codecs"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^jpeg\s+pillow\s+1\.\.100\s+75\s+yes", out, re.M)
    assert re.search(r"^vtm\s+external", out, re.M)


def _bad_files(encoded, tmp_path):
    good = encoded.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    rng = np.random.default_rng(0)
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "wrong-magic": b"JUNK" + good[4:],
        "crc-mismatch": bytes(flipped),
        "random": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "newer-version": good[:4] + b"\x07" + good[5:],
    }


@pytest.mark.parametrize("command", ["decode", "info"])
def test_bad_percept_files(encoded, tmp_path, capsys, command):
    for kind, data in _bad_files(encoded, tmp_path).items():
        bad = tmp_path / f"{kind}.prcp"
        bad.write_bytes(data)
        out = tmp_path / f"{kind}.png"
        args = [command, str(bad)] + ([str(out)] if command == "decode" else [])
        assert main(args) == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"percept {command}: error:"), (kind, err)
        assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codec", "nope", "--quality", "5"], "unknown codec 'nope'"),
        (["--codec", "jpeg", "--quality", "0"], "out of range"),
        (["--codec", "cheng2020-attn", "--quality", "9"], "out of range"),
        (["--codec", "jpeg", "--quality", "high"], "invalid int value"),
        (["--codec", "jpeg", "--set", "subsampling=4:1:1"], "subsampling"),
    ],
)
def test_bad_encode_options(photo, tmp_path, capsys, args, message):
    out = tmp_path / "x.prcp"
    assert main(["encode", str(photo), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_unreadable_image_and_missing_directory(photo, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    assert main(["encode", str(junk), str(tmp_path / "x.prcp")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "missing.png"), str(tmp_path / "x.prcp")]) == 2
    assert main(["encode", str(photo), str(tmp_path / "no" / "x.prcp")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.prcp"))


def test_enhance_without_enhancer_or_with_it(encoded, tmp_path, capsys):
    out = tmp_path / "e.png"
    code = main(["decode", str(encoded), str(out), "--enhance", "fast", "--steps", "1"])
    err = capsys.readouterr().err
    # Either the enhancer exists in this build and ran, or the user is told in one line that it does not.
    assert (code == 0 and out.exists()) or (code == 2 and err.count("\n") == 1 and not out.exists())


def _run(*args):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    return subprocess.run(
        [sys.executable, "-m", "percept.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_subprocess_bad_inputs_exit_2_with_one_line(encoded, tmp_path):
    bad = tmp_path / "bad.prcp"
    bad.write_bytes(encoded.read_bytes()[:-3])
    out = tmp_path / "bad.png"
    proc = _run("decode", str(bad), str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "truncated" in proc.stderr
    assert not out.exists()
    proc = _run("encode", str(encoded), str(tmp_path / "y.prcp"), "--codec", "jpeg")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert not (tmp_path / "y.prcp").exists()


def test_a_closed_pipe_ends_quietly(encoded):
    """`percept info f | head -1`: the reader leaves early; no traceback, the shell's 141."""
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "percept.cli", "info", str(encoded)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and err == ""
