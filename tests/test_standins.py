"""The paper profile's models offline: stand-ins in the exact formats of the hub priors and the
CompressAI zoo, loaded by the same code as the real ones, and saying they are stand-ins."""

from __future__ import annotations

import json

import pytest
import torch

from percept.cli import book
from percept.hub import standins


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return standins.write_standins(tmp_path_factory.mktemp("standins"), qualities=(2,))


def test_the_stand_ins_have_the_hub_models_layout_and_classes(written):
    for key, pipeline, scheduler in (
        ("prior", "DDPMPipeline", "DDPMScheduler"),
        ("consistency_model", "ConsistencyModelPipeline", "CMStochasticIterativeScheduler"),
    ):
        folder = written[key]
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == pipeline
        assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"][1] == scheduler
        assert json.loads((folder / "unet" / "config.json").read_text())["_class_name"] == "UNet2DModel"
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == scheduler
        assert standins.standin_of(folder) == standins.STANDS_FOR[folder.name]


def test_the_loaders_read_them_and_say_they_are_stand_ins(written, monkeypatch, capsys):
    from percept.codecs import get_codec
    from percept.codecs.container import decode_file, encode_image
    from percept.core.denoiser import is_consistency_model
    from percept.hub.zoo import load_denoiser

    prior, cm = load_denoiser(str(written["prior"])), load_denoiser(str(written["consistency_model"]))
    assert not is_consistency_model(prior) and is_consistency_model(cm)
    x = torch.rand(1, 3, 72, 80)
    assert prior(x * 2 - 1, torch.tensor(0.3)).shape == x.shape  # tiled at the model's 64 px
    said = capsys.readouterr().out
    assert said.count("stand-in weights") == 2 and "google/ddpm-ema-bedroom-256" in said

    monkeypatch.setenv("TORCH_HOME", str(written["torch_home"]))
    codec = get_codec("mbt2018-mean", 2)  # found where the zoo's download would have put it
    y, _ = decode_file(encode_image(x, codec))
    assert y.shape == x.shape
    assert "stand-in weights: mbt2018-mean quality 2" in capsys.readouterr().out


def test_a_profile_says_at_once_which_downloads_it_cannot_make(written, monkeypatch):
    import percept.codecs.compressai_codec as cc
    import percept.models.diffusers as md

    monkeypatch.setattr(md, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(cc, "zoo_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("TORCH_HOME", str(written["torch_home"]))
    sections = {
        "a": {"prior": "hf:nobody/not-cached-model", "codec": "mbt2018-mean", "quality": 3},
        "b": {"codecs": {"mbt2018-mean": [2], "jpeg": [5]}, "prior": str(written["prior"])},
    }
    missing = book.needed_downloads(sections)
    assert missing[0].startswith("hf:nobody/not-cached-model (not in the Hugging Face cache")
    assert len(missing) == 2 and "CompressAI mbt2018-mean q3 (" in missing[1]  # q2 is cached
    assert book.needed_downloads({"b": sections["b"]}) == []
