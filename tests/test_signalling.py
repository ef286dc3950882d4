"""Encoder-side sigma: calibrated on the image, written into the file, reproduced by the decoder."""

from __future__ import annotations

import pytest
import torch

from percept.cli import main
from percept.codecs import get_codec
from percept.codecs.container import decode_file, encode_image, pack, unpack
from percept.core.images import load_image, quantize, save_png
from percept.enhancer.calibrate import round_sigma, sigma_for_image
from percept.enhancer.pipeline import Enhancer, load_prior
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.signalling import prior_id, signal_sigma, signalled_entry
from percept.errors import PerceptError

PRIOR = "percept-cm-s"  # shipped in the package: a recorded sha256, and one fast step


@pytest.fixture(scope="module")
def cm():
    return load_prior(PRIOR)


def enhancer(cm, key="fast", name=PRIOR) -> Enhancer:
    return Enhancer(cm, key, prior_name=name)


@pytest.fixture(scope="module")
def crop(photo):
    return photo[..., 200:264, 300:364].contiguous()


def test_sigma_for_image_lands_on_the_target_with_a_storable_sigma():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    x_hat = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    direction = torch.randn_like(x)

    def run(sigma: float) -> torch.Tensor:  # error grows with sigma, as the enhancer's does
        return (x_hat + 0.1 * sigma * direction).clamp(0, 1)

    sigma, ratio = sigma_for_image(run, x, x_hat, 2.0, tol=0.01)
    assert sigma == round_sigma(sigma)  # what a header stores is what was measured
    assert ratio == pytest.approx(2.0, rel=0.01)
    measured = ((quantize(run(sigma)).double() - x.double()) ** 2).sum() / (
        (x_hat.double() - x.double()) ** 2
    ).sum()
    assert float(measured) == pytest.approx(ratio, rel=1e-9)
    with pytest.raises(PerceptError, match="lossless"):
        sigma_for_image(run, x, x, 2.0)


def test_the_decoder_reproduces_the_encoders_ratio(crop, tmp_path, capsys):
    src, plain, signalled = tmp_path / "x.png", tmp_path / "plain.prcp", tmp_path / "s.prcp"
    save_png(crop, src)
    base = ["encode", str(src), "--codec", "jpeg", "--quality", "10"]
    assert main([*base[:2], str(plain), *base[2:]]) == 0
    args = ["--signal-sigma", "fast", "--prior", PRIOR, "--seed", "3"]
    assert main([*base[:2], str(signalled), *base[2:], *args]) == 0
    assert "signalled sigma" in capsys.readouterr().out
    record = unpack(signalled.read_bytes())
    # the same payload; the entry costs header bytes, and bpp counts them
    assert record.payload == unpack(plain.read_bytes()).payload
    assert record.bpp > unpack(plain.read_bytes()).bpp
    (entry,) = record.params["enhance"]
    assert entry["preset"] == "fast" and entry["prior"] == prior_id(PRIOR) and entry["seed"] == 3

    out, dec = tmp_path / "e.png", tmp_path / "d.png"
    assert main(["decode", str(signalled), str(out), "--enhance", "fast", "--prior", PRIOR]) == 0
    assert "signalled in the file" in capsys.readouterr().err
    assert main(["decode", str(signalled), str(dec)]) == 0
    x, y, d = (load_image(p)[0].double() for p in (src, out, dec))
    ratio = float(((y - x) ** 2).sum() / ((d - x) ** 2).sum())
    assert ratio == pytest.approx(2.0, abs=0.05)

    # another seed is another noise draw: the ratio is no longer the calibrated one exactly
    other = tmp_path / "o.png"
    assert main(["decode", str(signalled), str(other), "--enhance", "fast", "--prior", PRIOR,
                 "--seed", "4"]) == 0  # fmt: skip
    y4 = load_image(other)[0].double()
    assert not torch.equal(y4, y)

    # the signalled sigma was calibrated without the projection: --consistency does not use it
    # (and JPEG q10 has no table entry here, so the decode stops and says what to run)
    args = ["--enhance", "fast", "--prior", PRIOR, "--consistency"]
    assert main(["decode", str(signalled), str(tmp_path / "c.png"), *args]) == 2
    err = capsys.readouterr().err
    assert "not for fast+consistency with prior" in err
    assert "no calibrated sigma for jpeg/q10/percept-cm-s/fast+consistency" in err


def test_resignalling_replaces_the_entry_for_that_setting_and_keeps_others(crop, cm):
    codec = get_codec("jpeg", 10)
    data = encode_image(crop, codec)
    once, first = signal_sigma(data, crop, enhancer(cm))
    twice, second = signal_sigma(once, crop, enhancer(cm), seed=1)
    entries = unpack(twice).params["enhance"]
    assert len(entries) == 1 and entries[0]["seed"] == 1
    assert first["mse_ratio"] == pytest.approx(2.0, abs=0.05)
    both, _ = signal_sigma(twice, crop, enhancer(cm, "fast@2"))
    assert [e.get("steps") for e in unpack(both).params["enhance"]] == [None, 2]
    # each setting finds its own entry; the decode itself is unchanged
    record = unpack(both)
    assert signalled_entry(record, enhancer(cm, "fast@2"))[0]["steps"] == 2
    assert signalled_entry(record, enhancer(cm))[0]["seed"] == 1
    # an entry that spells out the preset's own steps is the preset's setting
    params = {**record.params, "enhance": [{**unpack(twice).params["enhance"][0], "steps": 1}]}
    spelled = unpack(pack(record.codec, params, record.height, record.width, record.payload))
    assert signalled_entry(spelled, enhancer(cm))[0]["seed"] == 1
    assert torch.equal(decode_file(both)[0], decode_file(data)[0])


def test_an_entry_for_other_weights_or_settings_is_not_applied(crop, cm):
    data = encode_image(crop, get_codec("jpeg", 10))
    record = unpack(data)
    assert signalled_entry(record, enhancer(cm)) == (None, None)  # nothing signalled
    params = {**record.params, "enhance": [{"preset": "fast", "prior": "deadbeef", "sigma": 0.3}]}
    other = unpack(pack(record.codec, params, record.height, record.width, record.payload))
    entry, why = signalled_entry(other, enhancer(cm))
    assert entry is None and "deadbeef" in why and prior_id(PRIOR) in why
    assert signalled_entry(other, enhancer(cm, "medium"))[0] is None
    unknown = {**params, "enhance": [{"preset": "warp", "prior": prior_id(PRIOR), "sigma": 0.3}]}
    unknown = unpack(pack(record.codec, unknown, record.height, record.width, record.payload))
    assert signalled_entry(unknown, enhancer(cm))[0] is None  # a setting this version lacks
    good = {"preset": "fast", "prior": prior_id(PRIOR), "sigma": 0.3}
    for bad in ({"enhance": {"preset": "fast"}}, {"enhance": [{**good, "sigma": -1}]},
                {"enhance": [{**good, "seed": "x"}]}, {"enhance": [{**good, "seed": 1.5}]}):  # fmt: skip
        broken = unpack(pack(record.codec, {**record.params, **bad}, 64, 64, record.payload))
        with pytest.raises(PerceptError, match="corrupted header"):
            signalled_entry(broken, enhancer(cm))


def test_signalling_refuses_what_it_cannot_do(crop, cm, tmp_path, capsys):
    data = encode_image(crop, get_codec("jpeg", 10))
    with pytest.raises(PerceptError, match="the file holds a 64x64"):
        signal_sigma(data, crop[..., :32, :32], enhancer(cm))
    with pytest.raises(PerceptError, match="recorded sha256"):
        signal_sigma(data, crop, enhancer(cm, name=str(tmp_path / "missing.safetensors")))
    with pytest.raises(PerceptError, match="out of reach .*--target-ratio"):
        signal_sigma(data, crop, enhancer(cm), target=50.0)
    with pytest.raises(PerceptError, match="quantisation cells cap the distortion"):
        signal_sigma(data, crop, enhancer(cm, EnhancerConfig("fast", consistency=True)), target=50.0)
    src = tmp_path / "x.png"
    save_png(crop, src)
    assert main(["encode", str(src), str(tmp_path / "a"), "--signal-sigma", "fast"]) == 2
    assert "--signal-sigma needs --prior" in capsys.readouterr().err
    assert main(["encode", str(src), str(tmp_path / "a"), "--prior", PRIOR]) == 2
    assert "go with --signal-sigma" in capsys.readouterr().err


def test_signalled_sweep_reports_each_images_sigma_and_the_header_cost(crop, photos):
    from percept.eval.sweeps import signalled_sweep

    other = photos.image("kodim01")[..., :64, :64]
    images = {"a": crop, "b": other}
    per_image, table = signalled_sweep(
        images, get_codec("jpeg", 10), load_prior(PRIOR), PRIOR,
        swd_seeds=(0, 1), bootstrap=3, progress=False,
    )  # fmt: skip
    assert list(table["mode"]) == ["decode", "signalled"]
    assert table.loc[1, "mse_ratio"] == pytest.approx(2.0, abs=0.05)
    assert table.loc[1, "bpp"] > table.loc[0, "bpp"]  # the entry is paid for
    sigmas = per_image.loc[per_image["mode"] == "signalled", "sigma"]
    assert sigmas.nunique() == 2 and table.loc[1, "sigma"] == pytest.approx(sigmas.median())
    assert {"swd_gain_low", "swd_gain_high"} <= set(table.columns)


def test_a_sigma_signalled_with_the_projection_serves_consistent_decodes_only(
    crop, tmp_path, capsys
):
    src, out = tmp_path / "x.png", tmp_path / "c.prcp"
    save_png(crop, src)
    args = ["--signal-sigma", "fast", "--prior", PRIOR, "--consistency", "--target-ratio", "1.5"]
    assert main(["encode", str(src), str(out), "--codec", "jpeg", "--quality", "30", *args]) == 0
    capsys.readouterr()
    (entry,) = unpack(out.read_bytes()).params["enhance"]
    assert entry["consistency"] is True and entry["target"] == 1.5

    y_path, d_path = tmp_path / "y.png", tmp_path / "d.png"
    dec = ["--enhance", "fast", "--prior", PRIOR]
    assert main(["decode", str(out), str(y_path), *dec, "--consistency"]) == 0
    assert "signalled in the file" in capsys.readouterr().err
    assert main(["decode", str(out), str(d_path)]) == 0
    x, y, d = (load_image(p)[0].double() for p in (src, y_path, d_path))
    assert float(((y - x) ** 2).sum() / ((d - x) ** 2).sum()) == pytest.approx(1.5, abs=0.05)
    # a plain decode does not take a sigma calibrated with the projection (q30 has a table entry)
    assert main(["decode", str(out), str(tmp_path / "p.png"), *dec]) == 0
    assert "signals a sigma for fast+consistency/prior" in capsys.readouterr().err

    webp = tmp_path / "w.prcp"
    assert main(["encode", str(src), str(webp), "--codec", "webp", "--quality", "30", *args]) == 2
    assert "needs a JPEG file" in capsys.readouterr().err
    assert main(["encode", str(src), str(webp), "--consistency"]) == 2
    assert "go with --signal-sigma" in capsys.readouterr().err
