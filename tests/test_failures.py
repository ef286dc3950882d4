"""Failure cases image by image (`percept.eval.failures`): the outputs the chapter shows and their
distortion table."""

from __future__ import annotations

import pytest
import torch

from percept.codecs import get_codec
from percept.codecs.container import decode_file, encode_image
from percept.core.images import quantize
from percept.enhancer.pipeline import enhance
from percept.eval.failures import enhanced_panels, named_crops
from percept.metrics import mse, psnr
from percept.models import EDMDenoiser, UNet, UNetConfig

TINY = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)


@pytest.fixture(scope="module")
def setup(photo):
    images = {"a": photo[..., :64, :64], "text": named_crops(["text"], "center256")["text"]}
    images["text"] = images["text"][..., :64, :64]
    torch.manual_seed(0)
    return images, get_codec("jpeg", 10), EDMDenoiser(UNet(TINY)).eval()


def test_outputs_are_the_enhancers_on_the_real_decode(setup):
    images, codec, prior = setup
    sigmas = {"none": 0.0, "small": 0.1, "large": 0.8}
    panels = enhanced_panels(images, codec, prior, sigmas, preset="medium", seed=3)
    assert list(panels.outputs) == ["a", "text"]
    for name, x in images.items():
        made = panels.outputs[name]
        assert list(made) == ["original", "jpeg q10", "none", "small", "large"]
        x_hat, record = decode_file(encode_image(x, codec))
        assert torch.equal(made["original"], x) and torch.equal(made["jpeg q10"], x_hat)
        # each output is what enhance() gives with a generator seeded with `seed`, 8-bit rounded
        for label, sigma in sigmas.items():
            want = quantize(
                enhance(x_hat, prior, sigma, "medium", generator=torch.Generator().manual_seed(3))
            )
            assert torch.equal(made[label], want), (name, label)
        assert not torch.equal(made["small"], made["large"])
        rows = panels.table[panels.table["image"] == name].set_index("output")
        assert list(rows.index) == ["jpeg q10", "none", "small", "large"]
        assert rows["bpp"].eq(record.bpp).all()
        assert rows.loc["jpeg q10", "mse_ratio"] == pytest.approx(1.0)
        assert rows.loc["none", "mse_ratio"] == pytest.approx(1.0)
        assert rows.loc["large", "mse_ratio"] == pytest.approx(
            float(mse(x, made["large"])) / float(mse(x, x_hat))
        )
        assert rows.loc["large", "psnr"] == pytest.approx(float(psnr(x, made["large"])))
    assert dict(zip(panels.table["image"], panels.table["domain"])) == {
        "a": "photo",
        "text": "out of domain",
    }


def test_an_images_outputs_do_not_depend_on_the_others(setup):
    images, codec, prior = setup
    both = enhanced_panels(images, codec, prior, {"s": 0.3}, decode_label="decode")
    alone = enhanced_panels({"text": images["text"]}, codec, prior, {"s": 0.3})
    assert torch.equal(both.outputs["text"]["s"], alone.outputs["text"]["s"])
    assert list(both.outputs["text"]) == ["original", "decode", "s"]


def test_titles_carry_each_outputs_psnr(setup):
    images, codec, prior = setup
    panels = enhanced_panels({"a": images["a"]}, codec, prior, {"σ = 0.2": 0.2})
    titles = panels.titles("a")
    assert titles["original"] == "a: original"
    db = panels.table.set_index("output").loc["σ = 0.2", "psnr"]
    assert titles["σ = 0.2"] == f"a: σ = 0.2\n{db:.2f} dB"
    assert list(panels.titles("a", ["original"])) == ["original"]


def test_labels_must_not_collide(setup):
    images, codec, prior = setup
    with pytest.raises(ValueError, match="labels"):
        enhanced_panels(images, codec, prior, {"original": 0.1})
    with pytest.raises(ValueError, match="labels"):
        enhanced_panels(images, codec, prior, {"x": 0.1}, decode_label="x")
