"""JPEG consistency: the enhanced image moved back into its file's quantisation cells."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from percept.cli import main
from percept.codecs import get_codec
from percept.codecs.jpeg_consistency import (
    PLANES,
    JpegCells,
    _block_dct,
    _on_lattice,
    _to_rgb,
    _to_ycc,
    project_jpeg,
    projector_for,
)
from percept.core.images import load_image, save_png
from percept.errors import PerceptError


@pytest.fixture(scope="module")
def crop(photo):
    return photo[..., 200:264, 300:364].contiguous()


def _planes(x: torch.Tensor) -> np.ndarray:
    return _to_ycc(x[0].permute(1, 2, 0).double().numpy() * 255.0)


def _outside(x: torch.Tensor, cells: JpegCells, plane: int) -> np.ndarray:
    """How far each coefficient of x's plane lies outside its cell (0 inside), 0..255 units."""
    coef = _block_dct(_planes(x)[: cells.h8, : cells.w8, plane] - 128)
    return np.abs(coef - cells.centres[plane]) - cells.steps[plane] / 2


def test_the_block_dct_is_orthonormal_and_inverts():
    plane = np.random.default_rng(0).normal(size=(16, 24))
    coef = _block_dct(plane)
    assert coef.shape == (2, 3, 8, 8)
    assert np.allclose(_block_dct(coef, inverse=True), plane)
    assert np.isclose((coef**2).sum(), (plane**2).sum())


def _means(plane: np.ndarray, cells: JpegCells) -> np.ndarray:
    """A full-resolution chroma plane's 2x2 means over the region 4:2:0 cells cover."""
    p = plane[: cells.h16, : cells.w16]
    return p.reshape(cells.h16 // 2, 2, cells.w16 // 2, 2).mean(axis=(1, 3))


def _outside_halved(x: torch.Tensor, cells: JpegCells, plane: int) -> np.ndarray:
    coef = _block_dct(_means(_planes(x)[..., plane], cells) - 128)
    return np.abs(coef - cells.centres[plane]) - cells.steps[plane] / 2


@pytest.mark.parametrize(
    "subsampling, planes, halved",
    [("4:2:0", [0], [1, 2]), ("4:4:4", [0, 1, 2], []), ("4:2:2", [0], [])],
)
def test_projection_keeps_the_decode_and_pulls_a_noisy_image_into_the_cells(
    crop, subsampling, planes, halved
):
    codec = get_codec("jpeg", 50, subsampling=subsampling)
    payload = codec.encode(crop)
    decoded = codec.decode(payload)
    cells = JpegCells(payload)
    assert (cells.planes, cells.halved) == (planes, halved)
    # the decode sits at the cells' centres: projecting it changes nothing visible
    assert float((project_jpeg(decoded, payload) - decoded).abs().max()) < 1 / 255
    torch.manual_seed(0)
    noisy = (decoded + 0.1 * torch.randn_like(decoded)).clamp(0, 1)
    projected = project_jpeg(noisy, payload)
    for c in planes:
        assert (_outside(noisy, cells, c) > 1).mean() > 0.05
        assert (_outside(projected, cells, c) > 1).mean() < 0.01  # RGB clipping aside
    for c in halved:  # 4:2:0 chroma: the 2x2 means' coefficients are pinned
        assert (_outside_halved(noisy, cells, c) > 1).mean() > 0.01
        assert (_outside_halved(projected, cells, c) > 1).mean() < 0.002
    # the original lies in its cells, so the projection can only bring the planes closer to it
    for c in planes:
        before = ((_planes(noisy) - _planes(crop))[..., c] ** 2).mean()
        after = ((_planes(projected) - _planes(crop))[..., c] ** 2).mean()
        assert after < (0.8 if c == 0 else 0.95) * before
    # a colour cast moves chroma's DC out of its cells; the projection takes most of it back
    cast = (decoded + torch.tensor([0.12, 0.0, -0.12])[:, None, None]).clamp(0, 1)
    pulled = project_jpeg(cast, payload)
    for c in halved:
        err = [_means(_planes(v)[..., c] - _planes(crop)[..., c], cells) for v in (cast, pulled)]
        assert (err[1] ** 2).mean() < 0.5 * (err[0] ** 2).mean()
        # the change is the same on each 2x2 group: nothing finer than the file's chroma moves
        change = _planes(pulled)[..., c] - _planes(cast)[..., c]
        groups = change[: cells.h16, : cells.w16].reshape(cells.h16 // 2, 2, cells.w16 // 2, 2)
        assert np.median(np.ptp(groups, axis=(1, 3))) < 1e-6
    if subsampling == "4:2:2":  # chroma is left as it was (but where RGB clipping moved it)
        moved = np.abs(_planes(projected)[..., 1:] - _planes(noisy)[..., 1:]) > 1.0
        assert moved.mean() < 0.02


def test_the_half_scale_decode_gives_the_stored_chroma_plane(crop):
    """The 4:2:0 cells come from libjpeg's half-scale decode: its chroma's block DCT sits on the
    quantisation lattice (the stored coefficients), its luma's does not (a rescaled plane), and
    the lattice check tells them apart."""
    payload = get_codec("jpeg", 50).encode(crop)
    cells = JpegCells(payload)
    for c in (1, 2):
        index = cells.centres[c] / cells.steps[c]
        assert np.abs(index - np.round(index)).max() < 0.3
        assert _on_lattice(cells.centres[c], cells.steps[c])
    with Image.open(io.BytesIO(payload)) as img:
        img.draft("YCbCr", (32, 32))
        luma = np.asarray(img, dtype=np.float64)[..., 0]
    assert not _on_lattice(_block_dct(luma - 128), cells.steps[0] / 4)


def _numpy_projection(x: torch.Tensor, cells: JpegCells) -> torch.Tensor:
    """The projection written plainly in numpy: the reference the torch version must match."""
    ycc = _planes(x)
    for c in cells.planes:
        coef = _block_dct(ycc[: cells.h8, : cells.w8, c] - 128)
        half = cells.steps[c] / 2
        coef = np.clip(coef, cells.centres[c] - half, cells.centres[c] + half)
        ycc[: cells.h8, : cells.w8, c] = _block_dct(coef, inverse=True) + 128
    for c in cells.halved:
        means = _means(ycc[..., c], cells)
        coef = _block_dct(means - 128)
        half = cells.steps[c] / 2
        coef = np.clip(coef, cells.centres[c] - half, cells.centres[c] + half)
        change = _block_dct(coef, inverse=True) + 128 - means
        ycc[: cells.h16, : cells.w16, c] += np.kron(change, np.ones((2, 2)))
    return torch.from_numpy(np.clip(_to_rgb(ycc) / 255.0, 0, 1)).permute(2, 0, 1)[None]


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_the_torch_projection_matches_the_numpy_reference(crop, subsampling):
    codec = get_codec("jpeg", 20, subsampling=subsampling)
    payload = codec.encode(crop)
    cells = JpegCells(payload)
    noisy = (
        codec.decode(payload)
        + 0.15 * torch.randn(crop.shape, generator=torch.Generator().manual_seed(1))
    ).clamp(0, 1)
    ref = _numpy_projection(noisy, cells)
    got = cells.project(noisy.double())
    assert got.dtype == torch.float64
    assert float((got - ref).abs().max()) < 1e-9
    got32 = cells.project(noisy.float())
    assert got32.dtype == torch.float32 and float((got32.double() - ref).abs().max()) < 1e-6
    assert float((got - noisy.double()).abs().max()) > 0.05  # it did move the image


def test_the_float32_projection_an_accelerator_runs_matches_too(crop, monkeypatch):
    """On CUDA the projection computes in float32; the same arithmetic, forced here on the CPU."""
    import percept.codecs.jpeg_consistency as jc

    codec = get_codec("jpeg", 20)
    payload = codec.encode(crop)
    cells = JpegCells(payload)
    gen = torch.Generator().manual_seed(2)
    noisy = (codec.decode(payload) + 0.15 * torch.randn(crop.shape, generator=gen)).clamp(0, 1)
    ref = _numpy_projection(noisy, cells)
    monkeypatch.setattr(jc, "_work_dtype", lambda device: torch.float32)
    got = cells.project(noisy)
    assert float((got.double() - ref).abs().max()) < 2e-5
    assert any(dtype == torch.float32 for _, dtype in cells._cache)  # it did run in float32


def test_partial_edge_blocks_are_left_alone(crop):
    x = crop[..., :61, :45]
    codec = get_codec("jpeg", 10)
    payload = codec.encode(x)
    y = (codec.decode(payload) + 0.1).clamp(0, 1)
    p = project_jpeg(y, payload)
    assert p.shape == y.shape
    assert torch.allclose(p[..., 56:, :], y[..., 56:, :], atol=1e-6)
    assert torch.allclose(p[..., :, 40:], y[..., :, 40:], atol=1e-6)
    assert not torch.allclose(p[..., :56, :40], y[..., :56, :40], atol=1e-3)


def test_bad_input_is_refused_clearly(crop):
    payload = get_codec("jpeg", 10).encode(crop)
    with pytest.raises(PerceptError, match="needs a JPEG file"):
        projector_for("webp", get_codec("webp", 10).encode(crop))
    with pytest.raises(PerceptError, match="not a JPEG payload"):
        JpegCells(get_codec("webp", 10).encode(crop))
    with pytest.raises(PerceptError, match="the JPEG 64x64"):
        project_jpeg(crop[..., :32, :], payload)
    with pytest.raises(PerceptError, match="one RGB image"):
        project_jpeg(torch.cat([crop, crop]), payload)


def test_decode_with_consistency_lowers_the_distortion(crop, tmp_path, capsys):
    src, jpg, webp = tmp_path / "x.png", tmp_path / "x.prcp", tmp_path / "w.prcp"
    save_png(crop, src)
    assert main(["encode", str(src), str(jpg), "--codec", "jpeg", "--quality", "5"]) == 0
    outs = {}
    for name, extra in (("plain", []), ("consistent", ["--consistency"])):
        outs[name] = tmp_path / f"{name}.png"
        args = ["--enhance", "fast", "--prior", "percept-cm-s", "--sigma", "1.0", *extra]
        assert main(["decode", str(jpg), str(outs[name]), *args]) == 0
    assert "quantisation cells" in capsys.readouterr().out
    x, plain, consistent = (load_image(p)[0].double() for p in (src, *outs.values()))
    assert ((consistent - x) ** 2).mean() < ((plain - x) ** 2).mean()  # never equal: it moved
    assert main(["decode", str(jpg), str(tmp_path / "n.png"), "--consistency"]) == 2
    assert "--consistency goes with --enhance" in capsys.readouterr().err
    assert main(["encode", str(src), str(webp), "--codec", "webp", "--quality", "5"]) == 0
    args = ["--enhance", "fast", "--prior", "percept-cm-s", "--sigma", "1.0", "--consistency"]
    assert main(["decode", str(webp), str(tmp_path / "w.png"), *args]) == 2
    assert "needs a JPEG file" in capsys.readouterr().err


def test_sigma_sweep_with_consistency_projects_every_output(crop, photos):
    from percept.enhancer.pipeline import load_prior
    from percept.eval.sweeps import sigma_sweep

    images = {"a": crop, "b": photos.image("kodim01")[..., :64, :64]}
    cm = load_prior("percept-cm-s")
    kwargs = {"preset": "fast", "progress": False, "swd_seeds": (0,)}
    _, plain = sigma_sweep(images, get_codec("jpeg", 5), cm, [1.0], **kwargs)
    _, consistent = sigma_sweep(images, get_codec("jpeg", 5), cm, [1.0], consistency=True, **kwargs)
    assert consistent.loc[0, "mse"] == pytest.approx(plain.loc[0, "mse"])  # the decode
    assert consistent.loc[1, "mse_ratio"] < plain.loc[1, "mse_ratio"]


def _estimates(x_hat, model, preset, project, **kwargs):
    """Every clean-image estimate the sampler reports, in [0,1]."""
    from percept.enhancer.pipeline import enhance

    seen = []
    y = enhance(
        x_hat, model, 0.8, preset, generator=torch.Generator().manual_seed(0), project=project,
        callback=lambda info: seen.append(((info["denoised"].float() + 1) / 2).clamp(0, 1)),
        **kwargs,
    )  # fmt: skip
    return seen, y


def test_the_projection_applies_to_every_estimate_of_a_multi_step_sampler(crop):
    from percept.enhancer.pipeline import enhance, load_prior

    payload = get_codec("jpeg", 50).encode(crop)
    cells, decoded = JpegCells(payload), get_codec("jpeg", 50).decode(payload)
    prior = load_prior("percept-prior-s")
    plain, _ = _estimates(decoded, prior, "medium@3", None)
    projected, y = _estimates(decoded, prior, "medium@3", cells.project)
    assert len(projected) == 3
    with pytest.raises(PerceptError, match="DPS"):
        enhance(decoded, prior, 0.8, "slow", operator=lambda d: d, project=cells.project)
    # without the projection every estimate leaves the cells (5-6% of the luma coefficients by
    # more than half a unit); with it none does
    assert min((_outside(d, cells, 0) > 0.5).mean() for d in plain) > 0.03
    assert max((_outside(d, cells, 0) > 0.5).mean() for d in [*projected, y]) < 0.001


def test_the_enhancer_projects_only_the_image_region_of_its_padded_input(photo):
    from percept.enhancer.pipeline import Enhancer, load_prior
    from percept.enhancer.presets import EnhancerConfig

    x = photo[..., 100:161, 200:275].contiguous()  # 61x75
    payload = get_codec("jpeg", 10).encode(x)
    cells, decoded = JpegCells(payload), get_codec("jpeg", 10).decode(payload)
    enhancer = Enhancer(load_prior("percept-prior-s"), EnhancerConfig("medium", 2, consistency=True))
    y = enhancer(decoded, 0.8, project=cells.project)
    with pytest.raises(PerceptError, match="projection"):  # a consistency setting needs one
        enhancer(decoded, 0.8)
    with pytest.raises(PerceptError, match="consistency setting"):  # and only it takes one
        enhancer.with_config("medium@2")(decoded, 0.8, project=cells.project)
    assert y.shape == x.shape
    assert (_outside(y, cells, 0) > 0.5).mean() < 0.001


def test_calibration_with_the_projection_needs_a_larger_sigma(crop, photos):
    from percept.enhancer.calibrate import calibrate_sigma
    from percept.enhancer.pipeline import load_prior

    cm = load_prior("percept-cm-s")
    images = [crop[..., :32, :32], photos.image("kodim01")[..., :32, :32]]
    kwargs = {"mse_ratio": 1.3, "seed": 0, "tol": 0.01, "return_history": True}
    codec = get_codec("jpeg", 50)
    plain, _ = calibrate_sigma(codec, cm, images, "fast", **kwargs)
    sigma, history = calibrate_sigma(codec, cm, images, "fast+consistency", **kwargs)
    assert abs(dict(history)[sigma] - 1.3) <= 1.3 * 0.01 + 1e-9
    assert sigma > 1.05 * plain  # the projection removes part of the error the noise adds
    with pytest.raises(PerceptError, match="needs the codec"):
        calibrate_sigma(None, cm, [(crop, crop)], "fast+consistency")


def test_auto_sigma_with_the_projection_uses_its_own_table_entry(crop, tmp_path, monkeypatch):
    import percept.enhancer.table as calibrate
    from percept.enhancer.pipeline import Enhancer, load_prior

    table = tmp_path / "calibration.json"
    monkeypatch.setattr(calibrate, "table_path", lambda: table)
    enhancer = Enhancer(load_prior("percept-cm-s"), "fast+consistency", prior_name="percept-cm-s")

    def sigma_used():
        return enhancer.table_sigma("jpeg", 10)

    calibrate.store_sigma("jpeg", 10, "percept-cm-s", "fast", 0.5, {})
    with pytest.warns(RuntimeWarning, match="--preset fast --consistency"):
        assert sigma_used() == pytest.approx(0.5)
    key_preset = "fast+consistency"
    # an entry calibrated with the earlier, luma-only projection is stale: refused, with the command
    calibrate.store_sigma("jpeg", 10, "percept-cm-s", key_preset, 0.6, {})
    with pytest.warns(RuntimeWarning, match="earlier consistency projection"):
        assert sigma_used() == pytest.approx(0.5)
    calibrate.store_sigma("jpeg", 10, "percept-cm-s", key_preset, 0.75, {"projection": PLANES})
    assert sigma_used() == pytest.approx(0.75)
