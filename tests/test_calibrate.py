"""calibrate_sigma on a Gaussian mixture with a tiny byte-producing codec stand-in (eq. 3, 14)."""

from __future__ import annotations

import json

import pytest
import torch

from percept.enhancer.calibrate import bisect_log_sigma, calibrate_sigma
from percept.enhancer.pipeline import Enhancer, enhance
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.table import CalibrationMissing, lookup_sigma, store_sigma
from percept.errors import PerceptError
from percept.models import GaussianMixtureDenoiser


class QuantizerCodec:
    """Shrinks towards grey, then 8 levels per value, one byte each: real bytes, lossy, not learned."""

    name, quality = "quantizer", 8

    def encode(self, x: torch.Tensor) -> bytes:
        z = 0.5 + 0.8 * (x - 0.5)
        return bytes(torch.round(z.clamp(0, 1) * 7).to(torch.uint8).flatten().tolist())

    def decode(self, data: bytes) -> torch.Tensor:
        return (torch.tensor(list(data), dtype=torch.float32) / 7).reshape(1, 1, 2, 2)


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.3
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 0.12
    cov = a @ a.transpose(-1, -2) + 0.004 * torch.eye(4, dtype=torch.float64)
    gmm = GaussianMixtureDenoiser(means, cov, torch.tensor([0.5, 0.3, 0.2]))
    to_images = lambda s: ((s.float() + 1) / 2).clamp(0, 1).reshape(-1, 1, 2, 2)  # noqa: E731
    return gmm, to_images(gmm.sample(512, g)), to_images(gmm.sample(2000, g))


def test_calibrated_sigma_doubles_the_mse(mixture):
    gmm, calib, held_out = mixture
    codec = QuantizerCodec()
    sigma, history = calibrate_sigma(
        codec, gmm, list(calib.split(1)), "medium", 2.0, seed=0, tol=0.02, return_history=True
    )
    assert 0.01 < sigma < 2 and abs(dict(history)[sigma] - 2.0) <= 0.04
    # The ratio holds on 2000 held-out images with other noise seeds (pooled MSE, eq. 14).
    decoded = torch.cat([codec.decode(codec.encode(x)) for x in held_out.split(1)])
    y = enhance(decoded, gmm, sigma, "medium", generator=torch.Generator().manual_seed(123))
    ratio = float(((y - held_out) ** 2).mean() / ((decoded - held_out) ** 2).mean())
    assert abs(ratio - 2.0) < 0.2
    # Pre-decoded pairs, here as one batch, give the same answer as the codec path (per-image seeds).
    decoded_calib = torch.cat([codec.decode(codec.encode(x)) for x in calib.split(1)])
    assert calibrate_sigma(
        None, gmm, [(calib, decoded_calib)], "medium", 2.0, seed=0
    ) == pytest.approx(sigma)


def test_bisection_on_a_known_curve():
    sigma, history = bisect_log_sigma(lambda s: 1 + s**2, 2.0, tol=1e-4, max_iter=60)
    assert sigma == pytest.approx(1.0, rel=1e-3) and len(history) < 60
    with pytest.raises(PerceptError, match="out of reach"):
        bisect_log_sigma(lambda s: 1.0, 2.0)
    # a ratio that approaches the target from below and is within tolerance at the cap is taken
    sigma, _ = bisect_log_sigma(lambda s: 1.975 * min(s, 80) / 80, 2.0, tol=0.02)
    assert sigma == 80.0


def test_table_store_and_lookup(tmp_path):
    path = tmp_path / "calibration.json"
    with pytest.raises(CalibrationMissing, match="percept calibrate --codec jpeg --quality 10 --prior edm-s --preset medium`"):
        lookup_sigma("jpeg", 10, "edm-s", "medium", path=path)
    store_sigma("jpeg", 10, "edm-s", "medium", 0.21, {"mse_ratio": 1.98, "images": 16}, path=path)
    store_sigma("jpeg", 20, "edm-s", "medium", 0.15, path=path)
    assert lookup_sigma("jpeg", 10, "edm-s", "medium", path=path) == 0.21
    assert lookup_sigma("jpeg", 20, "edm-s", "medium", path=path) == 0.15


def test_each_setting_has_its_own_entry_steps_included(tmp_path, mixture, monkeypatch):
    """Regression (issue 21): a 20-step medium decode once looked up the 6-step entry. The key of
    an EnhancerConfig names its steps, so a setting never borrows another setting's sigma."""
    path = tmp_path / "calibration.json"
    store_sigma("jpeg", 10, "edm-s", "medium", 0.21, path=path)
    assert lookup_sigma("jpeg", 10, "edm-s", EnhancerConfig("medium", steps=6), path=path) == 0.21
    with pytest.raises(CalibrationMissing, match=r"medium@20: run `percept calibrate .* --steps 20`"):
        lookup_sigma("jpeg", 10, "edm-s", EnhancerConfig("medium", steps=20), path=path)
    store_sigma("jpeg", 10, "edm-s", EnhancerConfig("medium", steps=20), 0.4, path=path)
    assert lookup_sigma("jpeg", 10, "edm-s", "medium@20", path=path) == 0.4
    assert lookup_sigma("jpeg", 10, "edm-s", "medium", path=path) == 0.21
    # the Enhancer (what `percept decode --sigma auto` and `percept eval` use) takes the same path
    monkeypatch.setattr("percept.enhancer.table.table_path", lambda: path)
    gmm = mixture[0]
    for steps, sigma in ((None, 0.21), (6, 0.21), (20, 0.4)):
        enhancer = Enhancer(gmm, EnhancerConfig("medium", steps), prior_name="edm-s")
        assert enhancer.table_sigma("jpeg", 10) == sigma
    with pytest.raises(CalibrationMissing, match="medium@12"):
        Enhancer(gmm, EnhancerConfig("medium", 12), prior_name="edm-s").table_sigma("jpeg", 10)


def test_setting_keys_round_trip_and_refuse_nonsense():
    for key in ("medium", "medium@20", "fast-2", "euler@2", "fast+consistency", "slow~zeta0.5",
                "medium-sde@10+consistency"):  # fmt: skip
        assert EnhancerConfig.from_key(key).key == key
        assert hash(EnhancerConfig.from_key(key)) == hash(EnhancerConfig.from_key(key))
    assert EnhancerConfig.from_key("medium@6") == EnhancerConfig("medium")  # the preset's own steps
    assert EnhancerConfig(sampler="dpmpp_2m").key == "dpmpp_2m@6"
    for bad in ("", "warp", "medium@x", "medium@0", "medium@-1", "slow~zetanan"):
        with pytest.raises(PerceptError):
            EnhancerConfig.from_key(bad)


def test_an_entry_calibrated_on_other_weights_is_refused_as_stale(tmp_path):
    import torch

    from percept.enhancer.table import model_sha256
    from percept.hub.zoo import save_weights
    from percept.models import UNet, UNetConfig

    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)
    card = {"kind": "prior", "arch": "unet-edm", "unet": cfg.to_dict(), "sigma_data": 0.5}
    weights = tmp_path / "p.safetensors"
    torch.manual_seed(0)
    save_weights(UNet(cfg).state_dict(), card, weights)
    first = model_sha256(str(weights))
    assert first is not None and len(first) == 64
    table = tmp_path / "calibration.json"
    store_sigma("jpeg", 10, str(weights), "medium", 0.3, {"model_sha256": first}, path=table)
    assert lookup_sigma("jpeg", 10, str(weights), "medium", path=table) == 0.3
    save_weights(UNet(cfg).state_dict(), card, weights)  # republished: other weights, same name
    assert model_sha256(str(weights)) != first
    with pytest.raises(CalibrationMissing, match="other weights.*recalibrate"):
        lookup_sigma("jpeg", 10, str(weights), "medium", path=table)
    # entries without a recorded hash (older tables) and priors without one (diffusers) still work
    store_sigma("jpeg", 20, str(weights), "medium", 0.2, path=table)
    assert lookup_sigma("jpeg", 20, str(weights), "medium", path=table) == 0.2
    assert model_sha256("hf:some/model") is None


def test_an_entry_for_a_learned_codec_is_refused_once_the_codec_is_republished(tmp_path):
    from percept.enhancer.table import codec_sha256

    current = codec_sha256("percept-hyperprior", 2)
    assert current is not None and len(current) == 64
    assert codec_sha256("jpeg", 2) is None  # Pillow codecs are fixed by name and quality
    table = tmp_path / "calibration.json"
    info = {"codec_sha256": current}
    store_sigma("percept-hyperprior", 2, "p", "fast", 0.7, info, path=table)
    assert lookup_sigma("percept-hyperprior", 2, "p", "fast", path=table) == 0.7
    store_sigma("percept-hyperprior", 1, "p", "fast", 0.8, path=table)  # recorded by store_sigma
    assert json.loads(table.read_text())["entries"]["percept-hyperprior/q1/p/fast"][
        "codec_sha256"
    ] == codec_sha256("percept-hyperprior", 1)
    store_sigma("percept-hyperprior", 3, "p", "fast", 0.6, {"codec_sha256": "0" * 64}, path=table)
    with pytest.raises(CalibrationMissing, match="other percept-hyperprior weights.*recalibrate"):
        lookup_sigma("percept-hyperprior", 3, "p", "fast", path=table)
    data = json.loads(table.read_text())  # an entry from before codec hashes were recorded
    data["entries"]["percept-hyperprior/q4/p/fast"] = {"sigma": 0.5}
    table.write_text(json.dumps(data))
    with pytest.raises(CalibrationMissing, match="unrecorded codec weights"):
        lookup_sigma("percept-hyperprior", 4, "p", "fast", path=table)


def test_calibration_images_are_square_crops_of_large_enough_photos():
    from PIL import Image

    from percept.core.images import load_image
    from percept.enhancer.calibrate import calibration_images
    from percept.hub.data import imagenet_sample_paths

    crops = calibration_images(3, 256)
    assert [tuple(c.shape) for c in crops] == [(1, 3, 256, 256)] * 3
    # a crop larger than the first val photo (the sample's: 500x375) must come from the first
    # photo large enough, not be cut short
    val = imagenet_sample_paths("val")
    sides = []
    for path in val:
        with Image.open(path) as img:
            sides.append(min(img.size))
    size = sides[0] + 1
    larger = next(p for p, side in zip(val, sides) if side >= size)
    (big,) = calibration_images(1, size)
    assert torch.equal(big, load_image(larger)[0][..., :size, :size])
    with pytest.raises(PerceptError, match=f"{size} px or larger"):
        calibration_images(len(val), size)
