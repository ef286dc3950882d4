"""Low-rank students: a consistency model that ships as a patch on its teacher's weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from percept.errors import PerceptError
from percept.models import UNet, UNetConfig
from percept.models.lowrank import (
    add_low_rank,
    count_trainable,
    delta_state,
    merge_delta,
    merge_in_place,
)

CFG = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_low_rank_student_starts_as_its_base_and_trains_few_parameters():
    torch.manual_seed(0)
    base = UNet(CFG).eval()
    student = add_low_rank(copy.deepcopy(base), rank=2).eval()
    x, c = torch.randn(2, 3, 16, 16), torch.tensor([0.1, -0.3])
    assert torch.equal(student(x, c), base(x, c))  # B = 0 at the start
    total = sum(p.numel() for p in base.parameters())
    assert 0 < count_trainable(student) < total / 2
    # Every layer keeps its frozen base weight.
    assert all(
        not p.requires_grad for n, p in student.named_parameters() if n.endswith(".original")
    )


def test_delta_merges_back_to_the_trained_student_exactly_enough():
    torch.manual_seed(1)
    base = UNet(CFG).eval()
    student = _perturbed(add_low_rank(copy.deepcopy(base), rank=2)).eval()
    x, c = torch.randn(2, 3, 16, 16), torch.tensor([0.2, 0.5])
    want = student(x, c)
    delta = delta_state(student)
    assert sum(v.numel() for v in delta.values()) == count_trainable(student)
    rebuilt = UNet(CFG).eval()
    rebuilt.load_state_dict(merge_delta(base.state_dict(), delta))
    assert torch.allclose(rebuilt(x, c), want, atol=1e-5)
    assert not torch.allclose(base(x, c), want, atol=1e-3)  # the delta did change the network
    merged = merge_in_place(copy.deepcopy(student))
    assert not any("parametrizations" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(x, c), want, atol=1e-5)


def test_delta_refuses_another_base():
    torch.manual_seed(2)
    student = _perturbed(add_low_rank(UNet(CFG), rank=2))
    other = UNet(UNetConfig(channels=(8, 32), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4))
    with pytest.raises(PerceptError, match="does not match the base|wrong shape"):
        merge_delta(other.state_dict(), delta_state(student))
    with pytest.raises(PerceptError, match="rank"):
        add_low_rank(UNet(CFG), rank=0)


def test_low_rank_distillation_ships_a_small_patch_tied_to_its_teacher(tmp_path, one_thread):
    from percept.hub.zoo import load_denoiser
    from percept.models import ConsistencyDenoiser
    from percept.training.distill import DistillConfig, train_distill
    from percept.training.prior import export_model, train_prior
    from tests.test_training import tiny_config

    train_prior(tiny_config(steps=3), tmp_path / "teacher", progress=False)
    teacher_file = tmp_path / "teacher" / "ema.safetensors"
    cfg = DistillConfig(
        name="cm-lowrank-test", teacher=str(teacher_file), num_scales=8, ema_decay=0.5, crop=32,
        batch_size=4, steps=4, lr=1e-2, warmup_steps=1, bf16=False, train_images=8, val_images=2,
        val_crop=32, log_every=1, val_every=4, lowrank_rank=2,
    )  # fmt: skip
    train_distill(cfg, tmp_path / "cm", progress=False)
    patch = tmp_path / "cm" / "ema.safetensors"
    assert patch.stat().st_size < teacher_file.stat().st_size
    from_run = load_denoiser(tmp_path / "cm")
    from_file = load_denoiser(patch)
    teacher = load_denoiser(teacher_file)
    assert isinstance(from_file, ConsistencyDenoiser)
    x, s = torch.randn(1, 3, 24, 20), torch.tensor(0.5)
    assert torch.allclose(from_file(x, s), from_run(x, s), atol=1e-5)
    assert torch.equal(from_file(x, torch.tensor(cfg.sigma_min)), x)  # boundary condition
    # distillation moved the student away from its (preconditioning-swapped) starting point
    start = ConsistencyDenoiser(copy.deepcopy(teacher.net), cfg.sigma_min)
    assert not torch.allclose(from_file(x, s), start(x, s), atol=1e-4)

    # A teacher run directory cannot be a base (nothing published to patch).
    with pytest.raises(PerceptError, match="publish the teacher"):
        train_distill(
            DistillConfig(**{**cfg.to_dict(), "teacher": str(tmp_path / "teacher"),
                             "scale_range": (1.0, 2.0)}),
            tmp_path / "cm2", progress=False,
        )  # fmt: skip
    # The teacher's file replaced by another valid model: the patch refuses to apply.
    train_prior(tiny_config(steps=2, seed=5), tmp_path / "other", progress=False, export=False)
    export_model(tmp_path / "other", teacher_file)
    with pytest.raises(PerceptError, match="re-distil"):
        load_denoiser(patch)

    # ... but it can seed the re-distillation on the new teacher (a warm start): the new run starts
    # from the old patch's factors and small vectors on the new teacher's weights.
    from safetensors.torch import load_file

    from percept.hub.zoo import sha256_file
    from percept.training.publish import publish_run

    warm = train_distill(
        cfg, tmp_path / "cm-warm", init_from=str(patch), max_steps=0, progress=False
    )
    assert warm["step"] == cfg.steps  # the step count continues from the source's card
    new_patch = tmp_path / "cm-warm" / "ema.safetensors"
    old, new = load_file(patch), load_file(new_patch)
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    card = json.loads((tmp_path / "cm-warm" / "ema.safetensors.json").read_text())
    assert card["init_from"]["sha256"] == sha256_file(patch) and card["steps"] == cfg.steps
    old_card = json.loads(patch.with_name(patch.name + ".json").read_text())
    published = publish_run(tmp_path / "cm-warm", "cm-warm", "cm", folder=tmp_path / "zoo")
    commands = published["card"]["commands"]
    assert commands[: len(old_card["commands"])] == old_card["commands"]  # lineage kept
    assert "--init-from" in commands[-1] or len(commands) > len(old_card["commands"])
    load_denoiser(new_patch)(x, s)  # tied to the new teacher now
    with pytest.raises(PerceptError, match="rank"):
        train_distill(DistillConfig(**{**cfg.to_dict(), "lowrank_rank": 3}), tmp_path / "cm-r3",
                      init_from=str(patch), progress=False)  # fmt: skip
    with pytest.raises(PerceptError, match="not a consistency model"):
        train_distill(cfg, tmp_path / "cm-t", init_from=str(teacher_file), progress=False)
