"""Stand-ins for the papers' downloaded models: tiny, randomly initialised, in their exact formats.

Paper 1 runs hub priors (a DDPM UNet and a consistency model, diffusers' pipeline layout) and a
learned codec from CompressAI's zoo; none can be downloaded on a machine without internet. The
`paper-tiny` book profile runs every chapter through the same code path as the `paper` profile, on
models written here with the very classes and configuration files of those models:

- `ddpm-ema-bedroom-256/`: diffusers `UNet2DModel` + `DDPMScheduler` (google/ddpm-ema-bedroom-256's
  scheduler settings), saved with `save_pretrained` in the pipeline layout (`model_index.json`,
  `unet/`, `scheduler/`);
- `diffusers-cd_bedroom256_lpips/`: the same UNet class with `CMStochasticIterativeScheduler`
  (openai/diffusers-cd_bedroom256_lpips's settings);
- `torch/hub/checkpoints/`: a CompressAI zoo architecture at a tiny width, its `state_dict` saved
  under the file name of the zoo's download URL, so that with `TORCH_HOME` pointing at `torch/` the
  zoo loader finds it exactly where a download would have put it.

Every stand-in carries a marker (`percept-standin.json` in a folder, `FILE.standin` beside a
checkpoint); the loaders print that the weights are stand-ins whenever they read one, so no chapter
output can be mistaken for a result. The UNets are far smaller than the real ones (a few thousand
parameters): only the formats, configuration keys and code paths are those of the papers' models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from percept.errors import PerceptError

MARKER = "percept-standin.json"
CHECKPOINT_MARKER_SUFFIX = ".standin"
PRIOR = "ddpm-ema-bedroom-256"
CONSISTENCY = "diffusers-cd_bedroom256_lpips"
CODEC = "mbt2018-mean"
# What each stand-in stands for (printed whenever one is loaded).
STANDS_FOR = {
    PRIOR: "google/ddpm-ema-bedroom-256",
    CONSISTENCY: "openai/diffusers-cd_bedroom256_lpips",
}


def notice(what: str, stands_for: str) -> str:
    """The line a loader prints for a stand-in."""
    return (
        f"stand-in weights: {what} is a tiny randomly initialised model in the format of {stands_for}; "
        "its numbers test the code path and are not results"
    )


def standin_of(folder: str | Path) -> str | None:
    """What a diffusers folder stands for, when it is a stand-in (None for a real model)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("stands_for", "a hub model")


def checkpoint_is_standin(path: str | Path) -> bool:
    """Whether a CompressAI checkpoint was written by `write_standins`."""
    path = Path(path)
    return path.with_name(path.name + CHECKPOINT_MARKER_SUFFIX).is_file()


def _unet(seed: int, sample_size: int):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    # The real models' block types (plain and attention blocks), at a tiny width.
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return unet.eval()


def _pipeline(folder: Path, unet, scheduler, pipeline_class: str, stands_for: str) -> None:
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": pipeline_class,
        "unet": ["diffusers", type(unet).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    (folder / MARKER).write_text(json.dumps({"stands_for": stands_for, "random": True}, indent=1))


def codec_checkpoint_dir(torch_home: Path) -> Path:
    """Where torch.hub (and so CompressAI's zoo loader) keeps downloads under TORCH_HOME."""
    return torch_home / "hub" / "checkpoints"


def write_standins(folder: str | Path, *, sample_size: int = 64, qualities=(1, 2, 3, 4)) -> dict[str, Path]:
    """Write the stand-ins into `folder` (idempotent: an existing complete set is kept) and return
    their paths: `prior`, `consistency_model` (diffusers folders) and `torch_home` (the TORCH_HOME
    under which CompressAI's zoo finds the codec's checkpoints for `qualities`)."""
    from diffusers import CMStochasticIterativeScheduler, DDPMScheduler

    zoo = _compressai_zoo()
    folder = Path(folder)
    paths = {
        "prior": folder / PRIOR,
        "consistency_model": folder / CONSISTENCY,
        "torch_home": folder / "torch",
    }
    if not (paths["prior"] / MARKER).is_file():
        ddpm = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
            clip_sample=True, variance_type="fixed_small",
        )  # fmt: skip
        _pipeline(paths["prior"], _unet(0, sample_size), ddpm, "DDPMPipeline", STANDS_FOR[PRIOR])
    if not (paths["consistency_model"] / MARKER).is_file():
        cm = CMStochasticIterativeScheduler(
            num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, s_noise=1.0,
            rho=7.0, clip_denoised=True,
        )  # fmt: skip
        _pipeline(
            paths["consistency_model"], _unet(1, sample_size), cm, "ConsistencyModelPipeline",
            STANDS_FOR[CONSISTENCY],
        )  # fmt: skip
    checkpoints = codec_checkpoint_dir(paths["torch_home"])
    checkpoints.mkdir(parents=True, exist_ok=True)
    for quality in qualities:
        url = zoo.model_urls[CODEC]["mse"][quality]
        target = checkpoints / url.rsplit("/", 1)[-1]
        if target.is_file():
            continue
        torch.manual_seed(100 + quality)
        # mbt2018-mean's architecture (MeanScaleHyperprior) at a tiny width; the zoo loader reads
        # the widths back from the weights' shapes.
        model = zoo.model_architectures[CODEC](N=8, M=12)
        torch.save(model.state_dict(), target)
        target.with_name(target.name + CHECKPOINT_MARKER_SUFFIX).write_text(
            f"random stand-in for {url}\n"
        )
    return paths


def _compressai_zoo():
    try:
        from compressai.zoo import image as zoo
    except ImportError as exc:  # pragma: no cover - compressai is a dependency
        raise PerceptError(f"stand-ins need compressai: {exc}") from None
    return zoo
