"""Codecs: real round trips on a photo crop (Kodak, or its scikit-image stand-in), the registry,
CompressAI bitstreams, external tools."""

from __future__ import annotations

import hashlib
import io
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from percept.codecs import (
    CompressAICodec,
    codec_info,
    get_codec,
    list_codecs,
    register_codec,
    unregister_codec,
)
from percept.codecs.compressai_codec import deserialize, serialize
from percept.codecs.container import bpp, decode_file, encode_image
from percept.codecs.external import rgb_to_ycbcr, ycbcr_to_rgb
from percept.codecs.registry import CodecInfo
from percept.core.images import tensor_to_uint8
from percept.errors import CodecError, WeightsUnavailable

# Odd sizes on purpose: every codec must crop back exactly.
CROP = (slice(101, 168), slice(201, 292))  # 67 x 91
# A low and a high quality per codec; the higher one must cost more bytes and give a higher PSNR.
QUALITIES = {
    "jpeg": (10, 80),
    "webp": (10, 80),
    "avif": (20, 80),
    "jpeg2000": (30, 200),
    "jpegxl": (20, 80),
    "heic": (20, 80),
}


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def crop(photo):
    return photo[..., CROP[0], CROP[1]].contiguous()


def test_registry_lists_every_family():
    names = {c.name for c in list_codecs()}
    assert {"jpeg", "webp", "avif", "jpeg2000", "jpegxl", "heic", "vtm"} <= names
    assert {"bmshj2018-hyperprior", "mbt2018", "cheng2020-attn"} <= names
    info = codec_info("cheng2020-anchor")
    assert (info.quality_min, info.quality_max) == (1, 6)
    for c in list_codecs():
        assert c.available or c.reason, c.name


@pytest.mark.parametrize("name", list(QUALITIES))
def test_round_trip_on_a_photo_crop(crop, name):
    if not codec_info(name).available:
        pytest.skip(codec_info(name).reason)
    results = []
    for quality in QUALITIES[name]:
        data = encode_image(crop, get_codec(name, quality))
        y, rec = decode_file(data)
        assert y.shape == crop.shape and y.dtype == torch.float32
        assert rec.bpp == 8 * len(data) / (67 * 91)
        # Decoding is deterministic and the payload is the codec's own file.
        assert torch.equal(y, get_codec(name, quality).decode(rec.payload))
        results.append((len(data), _psnr(crop, y)))
    (small, low), (large, high) = results
    assert small < large and low < high
    assert low > 22.0


def test_pillow_jpeg_matches_pillow_itself(crop, tmp_path):
    """Our JPEG payload is byte-identical to Pillow's own file, and its PSNR matches numpy's."""
    codec = get_codec("jpeg", 35)
    payload = codec.encode(crop)
    arr = (crop[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path / "ref.jpg"
    Image.fromarray(arr).save(path, quality=35, subsampling=2, optimize=True)
    assert path.read_bytes() == payload
    ref = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    mse = np.mean((ref - arr.astype(np.float64)) ** 2)
    psnr_numpy = 10 * np.log10(255.0**2 / mse)
    decoded = codec.decode(payload)
    assert np.array_equal(tensor_to_uint8(decoded), ref.astype(np.uint8))
    # Same value up to float32 storage of the [0,1] tensors.
    assert abs(_psnr(crop, decoded) - psnr_numpy) < 1e-5
    assert get_codec("jpeg", 35, subsampling="4:4:4").params["subsampling"] == "4:4:4"


def test_jpeg2000_quality_is_a_rate_target(photo):
    x = photo[..., :256, :256]
    for quality in (25, 100):
        data = get_codec("jpeg2000", quality).encode(x)
        assert abs(bpp(data, 256, 256) - quality / 100) < 0.1 * quality / 100 + 0.02


def test_registry_errors():
    with pytest.raises(CodecError, match="unknown codec 'nope'"):
        get_codec("nope", 5)
    with pytest.raises(CodecError, match="out of range for jpeg: use 1..100"):
        get_codec("jpeg", 101)
    with pytest.raises(CodecError, match="out of range for cheng2020-anchor"):
        get_codec("cheng2020-anchor", 7)
    with pytest.raises(CodecError, match="does not take option"):
        get_codec("jpeg", 50, weights="x.pth")
    with pytest.raises(CodecError, match="subsampling"):
        get_codec("jpeg", 50, subsampling="4:1:1")


def _tiny_model():
    from compressai.models import ScaleHyperprior

    torch.manual_seed(0)
    return ScaleHyperprior(N=8, M=8)


# md5 of the tiny seeded model's payload for the 67x91 crop; CompressAI's range coder is
# deterministic on CPU, so this changes only when the model, the input or the format changes (the
# untrained 8-channel model codes kodim23's crop and the stand-in's to the same bytes).
GOLDEN_TINY_MD5 = "bfb6e70e0f62aeaaa6aa8307b360589f"


def test_compressai_tiny_model_is_bit_exact_and_golden(crop):
    first = CompressAICodec(_tiny_model(), "tiny", 1).encode(crop)
    second = CompressAICodec(_tiny_model(), "tiny", 1).encode(crop)
    assert first == second
    assert hashlib.md5(first).hexdigest() == GOLDEN_TINY_MD5
    codec = CompressAICodec(_tiny_model(), "tiny", 1)
    y = codec.decode(first)
    assert y.shape == crop.shape
    assert torch.equal(y, torch.round(y * 255) / 255)  # on the 8-bit grid


def test_compressai_codec_through_the_registry_and_container(crop):
    info = CodecInfo("tiny-test", "project", 1, 1, 1, "test model")
    register_codec(
        "tiny-test", lambda quality: CompressAICodec(_tiny_model(), "tiny-test", quality), info
    )
    try:
        data = encode_image(crop, get_codec("tiny-test", 1))
        y, rec = decode_file(data)
        assert rec.codec == "tiny-test" and rec.params["pad"] == "replicate/64"
        assert y.shape == crop.shape
    finally:
        unregister_codec("tiny-test")


def test_payload_serialisation_round_trip():
    strings = [[b"abc" * 50], [b"", b"\x00\xff"]]
    blob = serialize(67, 91, strings, [2, 3])
    assert deserialize(blob) == (67, 91, strings, [2, 3])
    for n in range(len(blob)):
        with pytest.raises(CodecError):
            deserialize(blob[:n])


def test_zoo_offline_without_weights_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as exc:
        get_codec("bmshj2018-hyperprior", 2)
    message = str(exc.value)
    assert "https://compressai.s3.amazonaws.com/models/v1/bmshj2018-hyperprior-2-" in message
    assert "--weights PATH" in message and "\n" not in message
    assert time.monotonic() - start < 20


def test_plumbing_zoo_architecture_with_local_random_weights(photo, tmp_path):
    """Plumbing only: random weights, so the bitstream is real but the numbers mean nothing."""
    from compressai.zoo import bmshj2018_hyperprior
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = bmshj2018_hyperprior(quality=1, pretrained=False)
    pth, st = tmp_path / "hyper-q1.pth", tmp_path / "hyper-q1.safetensors"
    torch.save(model.state_dict(), pth)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    x = photo[..., :64, :72]
    codec = get_codec("bmshj2018-hyperprior", 1, weights=str(pth))
    data = encode_image(x, codec)
    y, rec = decode_file(data, weights=str(st))  # the same tensors in another format decode it
    assert y.shape == x.shape
    assert torch.equal(y, codec.decode(rec.payload))
    assert rec.params["weights_sha256"] == codec.weights_id
    torch.manual_seed(1)
    torch.save(bmshj2018_hyperprior(quality=1).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CodecError, match="pass --weights the file that encoded it"):
        decode_file(data, weights=str(tmp_path / "other.pth"))
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        get_codec("bmshj2018-hyperprior", 1, weights=str(tmp_path / "missing.pth"))


def test_vtm_colour_conversion_inverts():
    rgb = np.random.default_rng(0).random((4, 5, 3))
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb)


def test_external_codec_bytes_are_real_files(crop):
    if not codec_info("jpegxl").available:
        pytest.skip(codec_info("jpegxl").reason)
    data = get_codec("jpegxl", 50).encode(crop)
    assert data[:2] == b"\xff\x0a" or data[4:8] == b"JXL "
    assert Image.open(io.BytesIO(get_codec("jpeg", 50).encode(crop))).format == "JPEG"


def test_codecs_declare_what_they_can_do():
    """The enhancer asks a codec, not its name, for a differentiable operator (DPS) and for a
    projection of its files' cells (consistency settings)."""
    from percept.codecs.base import has_projector, operator_of
    from percept.codecs.compressai_codec import CompressAIOperator

    jpeg, webp = get_codec("jpeg", 20), get_codec("webp", 20)
    learned = get_codec("percept-hyperprior", 1)
    assert has_projector(jpeg) and not has_projector(webp) and not has_projector(learned)
    assert operator_of(jpeg) is None and operator_of(webp) is None
    assert isinstance(operator_of(learned), CompressAIOperator)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    payload = jpeg.encode(x)
    project = jpeg.projector(payload)
    decoded = jpeg.decode(payload)
    assert float((project(decoded) - decoded).abs().max()) < 0.02  # the decode is in its cells
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    once = project(noise)
    assert float((once - noise).abs().mean()) > 0.05  # another image is moved into them
