"""diffusers models as Denoisers D(x, sigma) in the EDM / variance-exploding convention.

DDPM UNets (e.g. google/ddpm-ema-bedroom-256) are variance preserving: x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps. Dividing by sqrt(abar_t) gives the VE form x = x0 + sigma_t eps with
sigma_t = sqrt((1 - abar_t) / abar_t), so x_vp = x / sqrt(1 + sigma^2). A continuous sigma maps
to a fractional timestep by linear interpolation of log(sigma_t) over the training grid
t = 0..T-1 (sigma_t is increasing, log-sigma is smooth in t), and the UNet's sinusoidal embedding
takes that fractional t as is. Sigmas outside [sigma_0, sigma_{T-1}] are clamped to the grid.

Consistency models (openai/diffusers-cd_bedroom256_lpips) are already VE: one step from any sigma,
f(x, sigma) = c_skip x + c_out F(x / sqrt(sigma^2 + sd^2), 250 ln sigma), with the boundary-condition
scalings of `CMStochasticIterativeScheduler` (c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2),
c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2)) and its clip to [-1, 1]; we do not call
`scheduler.step`, which only accepts sigmas of its own grid.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from percept.errors import WeightsUnavailable


def _batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    return s.expand(x.shape[0])


def _first_channels(out: Tensor, channels: int) -> Tensor:
    # Models that learn their variance (ADM) output 2C channels: the first C are the prediction.
    return out[:, :channels]


class DDPMDenoiser(nn.Module):
    """A diffusers UNet2DModel trained with a DDPM (VP) scheduler, as D(x, sigma) -> x0 estimate."""

    is_consistency_model = False

    def __init__(
        self, unet: nn.Module, alphas_cumprod: Tensor, prediction_type: str = "epsilon"
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.unet, self.prediction_type = unet.eval(), prediction_type
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("log_sigmas", (((1 - abar) / abar).sqrt()).log())
        self.sample_size = getattr(unet.config, "sample_size", None)

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep: log(sigma) interpolated linearly on the grid log(sigma_t), clamped."""
        ls = self.log_sigmas
        log_s = sigma.to(torch.float64).clamp(ls[0].exp(), ls[-1].exp()).log()
        hi = torch.searchsorted(ls, log_s).clamp(1, len(ls) - 1)
        lo = hi - 1
        frac = (log_s - ls[lo]) / (ls[hi] - ls[lo])
        return lo.to(torch.float64) + frac

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = _batch_sigma(sigma, x)
        t = self.sigma_to_t(
            torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        )
        t = t.to(device=x.device, dtype=torch.float32)
        scale = (1 + s.double() ** 2).rsqrt().to(x.dtype).reshape(-1, 1, 1, 1)  # sqrt(abar)
        x_vp = x * scale
        out = _first_channels(self.unet(x_vp, t).sample, x.shape[1]).to(x.dtype)
        s4 = s.reshape(-1, 1, 1, 1).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s4 * out  # x0 = (x_vp - sqrt(1 - abar) eps) / sqrt(abar) = x - sigma eps
        if self.prediction_type == "v_prediction":
            return scale * x_vp - (s4 * scale) * out  # x0 = sqrt(abar) x_vp - sqrt(1 - abar) v
        return out

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs) -> DDPMDenoiser:
        from diffusers import DDPMScheduler, UNet2DModel

        unet = _load(UNet2DModel, source, "unet", low_cpu_mem_usage=False, **kwargs)
        sched = _load(DDPMScheduler, source, "scheduler", **kwargs)
        return cls(unet, sched.alphas_cumprod, sched.config.prediction_type)


class DiffusersConsistencyDenoiser(nn.Module):
    """A diffusers consistency-model UNet as a one-step Denoiser f(x, sigma) (paper eq. 15)."""

    is_consistency_model = True

    def __init__(
        self,
        unet: nn.Module,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        clip_denoised: bool = True,
    ) -> None:
        super().__init__()
        self.unet = unet.eval()
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
        self.clip_denoised = clip_denoised
        self.sample_size = getattr(unet.config, "sample_size", None)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = _batch_sigma(sigma, x).clamp(self.sigma_min, self.sigma_max)
        sd = self.sigma_data
        s4 = s.reshape(-1, 1, 1, 1).to(x.dtype)
        c_skip = sd**2 / ((s4 - self.sigma_min) ** 2 + sd**2)
        c_out = (s4 - self.sigma_min) * sd / (s4**2 + sd**2).sqrt()
        t = 1000 * 0.25 * torch.log(s + 1e-44)  # the scheduler's sigma_to_t
        out = _first_channels(self.unet(x / (s4**2 + sd**2).sqrt(), t).sample, x.shape[1]).to(
            x.dtype
        )
        denoised = c_skip * x + c_out * out
        return denoised.clamp(-1, 1) if self.clip_denoised else denoised

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs) -> DiffusersConsistencyDenoiser:
        from diffusers import CMStochasticIterativeScheduler, UNet2DModel

        unet = _load(UNet2DModel, source, "unet", low_cpu_mem_usage=False, **kwargs)
        c = _load(CMStochasticIterativeScheduler, source, "scheduler", **kwargs).config
        return cls(unet, c.sigma_min, c.sigma_max, c.sigma_data, c.clip_denoised)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (or HF_ENDPOINT) answers a TCP connection within `timeout`."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def cached(source: str | Path) -> bool:
    """Whether a diffusers model is a local folder or already in the Hugging Face cache."""
    try:
        with warnings.catch_warnings():  # the hub client's deprecation notes about its own options
            warnings.simplefilter("ignore")
            _scheduler_config(source, local_files_only=True)
    except WeightsUnavailable:
        return False
    return True


def _load(kind, source: str | Path, subfolder: str, **kwargs):
    """kind.from_pretrained from a pipeline layout (subfolder) or a single-model layout (root)."""
    errors = []
    for sub in (subfolder, None):
        try:
            obj = kind.from_pretrained(str(source), subfolder=sub, **kwargs)
            return obj.eval() if isinstance(obj, nn.Module) else obj
        except (OSError, ValueError) as exc:  # missing files, no network, no such repo
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    local = Path(source).exists()
    how = (
        "check the folder"
        if local
        else (
            "this machine cannot reach the Hugging Face Hub: download it elsewhere with "
            f"`huggingface-cli download {source} --local-dir DIR` and pass DIR"
        )
    )
    raise WeightsUnavailable(f"cannot load {kind.__name__} from {source!s}: {errors[-1]}; {how}")


def from_pretrained(source: str | Path, **kwargs) -> nn.Module:
    """A Denoiser from a diffusers hub id or folder; the scheduler's class picks the adapter.

    A hub id not in the local cache is fetched only when the hub answers, so a machine without
    network gets its one-line error at once instead of after the hub client's retries."""
    if not Path(source).exists() and not kwargs.get("local_files_only"):
        try:
            _scheduler_config(source, **{**kwargs, "local_files_only": True})
        except WeightsUnavailable:
            if not hub_reachable():
                raise WeightsUnavailable(
                    f"cannot load {source!s}: it is not in the local cache and this machine cannot "
                    "reach the Hugging Face Hub: download it elsewhere with "
                    f"`huggingface-cli download {source} --local-dir DIR` and pass DIR"
                ) from None
    config = _scheduler_config(source, **kwargs)
    name = config.get("_class_name", "")
    if name == "CMStochasticIterativeScheduler":
        return DiffusersConsistencyDenoiser.from_pretrained(source, **kwargs)
    if name in ("DDPMScheduler", "DDIMScheduler"):
        return DDPMDenoiser.from_pretrained(source, **kwargs)
    raise WeightsUnavailable(
        f"{source}: scheduler {name or '(none)'} is not supported; use a DDPM or consistency model"
    )


def _scheduler_config(source: str | Path, **kwargs) -> dict:
    from diffusers import DDPMScheduler

    errors = []
    for sub in ("scheduler", None):
        try:
            return dict(DDPMScheduler.load_config(str(source), subfolder=sub, **kwargs))
        except (OSError, ValueError) as exc:
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    raise WeightsUnavailable(
        f"cannot read a scheduler config from {source!s}: {errors[-1]}; without network access, download "
        f"the model elsewhere (`huggingface-cli download {source} --local-dir DIR`) and pass DIR"
    )
