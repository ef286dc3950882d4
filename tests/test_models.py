"""The project's UNet and its preconditionings (EDM prior, consistency model)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from percept.models import (
    ConsistencyDenoiser,
    EDMDenoiser,
    UNet,
    UNetConfig,
    consistency_scalings,
    edm_scalings,
)
from percept.models.unet import pad_to_multiple

TINY = UNetConfig(channels=(8, 16, 16), blocks=(1, 1, 1), mid_blocks=1, emb_dim=16, groups=4)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised output layers make a fresh UNet the zero map; perturb every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("hw", [(17, 23), (32, 32), (5, 9), (1, 1), (64, 31)])
def test_unet_any_size_keeps_shape(hw):
    net = _randomised(UNet(TINY))
    x = torch.randn(2, 3, *hw)
    out = net(x, torch.zeros(2))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_padding_is_reflective_and_cropped_back():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    p = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (4, 4)
    assert torch.equal(p[..., 3, :], x[..., 1, :])  # reflection of row 2 about the edge -> row 1


def test_fresh_unet_is_zero_so_edm_denoiser_is_shrinkage():
    """Zero-initialised output: D(x) = c_skip x exactly, the optimal *linear* guess for sd=0.5 data."""
    d = EDMDenoiser(UNet(TINY))
    x = torch.randn(2, 3, 8, 8)
    sigma = torch.tensor([0.1, 1.0])
    expected = x * (0.25 / (sigma**2 + 0.25)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(d(x, sigma), expected)


def test_edm_scalings_match_table_1():
    sigma = torch.tensor([0.02, 0.5, 3.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(0.25 / (s * s + 0.25))
        assert c_out[i].item() == pytest.approx(s * 0.5 / math.sqrt(s * s + 0.25))
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s * s + 0.25))
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4)
    # The effective training target F = (x0 - c_skip x)/c_out has unit variance for sd=0.5 data.
    assert (
        (c_skip**2 * (0.25 + sigma**2) - 2 * c_skip * 0.25 + 0.25)
        .div(c_out**2)
        .allclose(torch.ones(3, dtype=torch.float64))
    )


def test_edm_denoiser_uses_preconditioning_in_one_forward():
    net = _randomised(UNet(TINY), seed=3)
    d = EDMDenoiser(net)
    x = torch.randn(2, 3, 16, 16)
    sigma = torch.tensor([0.3, 0.7])
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = edm_scalings(s)
    expected = c_skip * x + c_out * net(c_in * x, c_noise.reshape(-1))
    torch.testing.assert_close(d(x, sigma), expected)
    # A scalar sigma means the same level for every image in the batch.
    torch.testing.assert_close(d(x, torch.tensor(0.3)), d(x, torch.tensor([0.3, 0.3])))


def test_consistency_boundary_condition_is_exact():
    d = ConsistencyDenoiser(_randomised(UNet(TINY), seed=1), sigma_min=0.002)
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(d(x, torch.tensor(0.002)), x)
    assert torch.equal(d(x, torch.tensor(0.0)), x)  # below sigma_min: the identity
    c_skip, c_out, _, _ = consistency_scalings(torch.tensor([0.002, 80.0]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert not torch.allclose(d(x, torch.tensor(0.5)), x)


def test_config_json_round_trip():
    cfg = UNetConfig(channels=(8, 16), blocks=(1, 2), groups=4, attention=True)
    again = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError):
        UNetConfig.from_dict({"channels": [8], "blocks": [1], "bogus": 1})


def test_optional_attention_runs():
    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), emb_dim=16, groups=4, attention=True)
    net = _randomised(UNet(cfg))
    assert net(torch.randn(1, 3, 10, 14), torch.zeros(1)).shape == (1, 3, 10, 14)
