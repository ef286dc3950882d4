"""The model zoo: publish, hash-checked loading, and the accepted ways of naming a model."""

from __future__ import annotations

import json

import pytest
import torch

from percept.errors import PerceptError, WeightsUnavailable
from percept.hub.zoo import load_denoiser, publish, read_registry, resolve
from percept.models import EDMDenoiser, UNet, UNetConfig
from percept.training.publish import publish_run

CFG = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)


def _model(seed: int = 0) -> EDMDenoiser:
    torch.manual_seed(seed)
    model = EDMDenoiser(UNet(CFG))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _publish(folder, name="toy-prior"):
    model = _model()
    card = {"arch": "unet-edm", "unet": CFG.to_dict(), "sigma_data": 0.5, "steps": 7}
    publish(name, "prior", model.net.state_dict(), card, folder=folder)
    return model


def test_publish_then_load_is_exact(tmp_path):
    model = _publish(tmp_path)
    entry = read_registry(tmp_path / "zoo.json")["toy-prior"]
    assert entry["kind"] == "prior" and len(entry["sha256"]) == 64 and entry["card"]["steps"] == 7
    loaded = load_denoiser("toy-prior", registry=tmp_path / "zoo.json")
    x, sigma = torch.randn(2, 3, 13, 17), torch.tensor([0.1, 0.4])
    assert torch.equal(loaded(x, sigma), model(x, sigma))
    # The file on its own (with its sidecar) loads the same.
    by_path = load_denoiser(tmp_path / "toy-prior.safetensors")
    assert torch.equal(by_path(x, sigma), model(x, sigma))


def test_hash_mismatch_is_a_clear_error(tmp_path):
    _publish(tmp_path)
    path = tmp_path / "toy-prior.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PerceptError, match="corrupt.*re-publish"):
        load_denoiser("toy-prior", registry=tmp_path / "zoo.json")
    with pytest.raises(PerceptError, match="corrupt"):
        load_denoiser(path)


def test_unknown_names_and_missing_sidecar(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no model"):
        resolve("no-such-model", registry=tmp_path / "zoo.json")
    _publish(tmp_path)
    (tmp_path / "toy-prior.safetensors.json").unlink()
    with pytest.raises(PerceptError, match="sidecar"):
        load_denoiser(tmp_path / "toy-prior.safetensors")
    with pytest.raises(PerceptError, match="unknown model kind"):
        publish("x", "gan", {}, {}, folder=tmp_path)


def test_publish_run_records_training_card(tmp_path):
    from percept.training.prior import PriorTrainConfig, train_prior

    cfg = PriorTrainConfig(
        name="zoo-test", unet=CFG.to_dict(), crop=32, batch_size=2, steps=2, bf16=False,
        train_images=4, val_images=1, val_crop=32, log_every=1, val_every=2,
    )  # fmt: skip
    train_prior(cfg, tmp_path / "run", progress=False, export=False)
    entry = publish_run(tmp_path / "run", "run-prior", folder=tmp_path / "zoo", half=False)
    assert entry["card"]["steps"] == 2 and entry["card"]["val_psnr"] is not None
    from_run = load_denoiser(tmp_path / "run")
    from_zoo = load_denoiser("run-prior", registry=tmp_path / "zoo" / "zoo.json")
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(from_run(x, 0.2), from_zoo(x, 0.2))
    # the default float16 storage halves the file and changes outputs only at float16 precision
    half = publish_run(tmp_path / "run", "run-prior-half", folder=tmp_path / "zoo")
    assert half["card"]["storage_dtype"] == "float16"
    from_half = load_denoiser("run-prior-half", registry=tmp_path / "zoo" / "zoo.json")
    torch.testing.assert_close(from_half(x, 0.2), from_run(x, 0.2), atol=2e-2, rtol=0)
    assert (
        json.loads((tmp_path / "zoo" / "run-prior.safetensors.json").read_text())["name"]
        == "run-prior"
    )


def test_record_benchmark_updates_card_and_sidecar_but_not_weights(tmp_path):
    from percept.hub.zoo import load_weights_and_card, read_registry, record_benchmark

    _publish(tmp_path)
    registry = tmp_path / "zoo.json"
    sha = read_registry(registry)["toy-prior"]["sha256"]
    record_benchmark(
        "toy-prior", "kodak_benchmark", {"results": {"0.1": {"prior": 30.0}}}, registry=registry
    )
    entry = read_registry(registry)["toy-prior"]
    assert entry["sha256"] == sha
    assert entry["card"]["kodak_benchmark"]["results"]["0.1"]["prior"] == 30.0
    _, card = load_weights_and_card(tmp_path / "toy-prior.safetensors")  # through the sidecar
    assert card["kodak_benchmark"]["results"]["0.1"]["prior"] == 30.0
    with pytest.raises(PerceptError, match="no zoo entry"):
        record_benchmark("absent", "x", {}, registry=registry)
