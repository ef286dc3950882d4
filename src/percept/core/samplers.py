"""Samplers over an explicit, descending sigma schedule that ends in 0 (k-diffusion `sampling.py` style).

Every sampler is `sample_xxx(denoiser, x, sigmas, *, generator=None, callback=None, progress=False)`
with `x` already at noise level sigmas[0] (for the enhancer: x_hat + sigma * eps, paper eq. 9) and
`denoiser(x, sigma) -> x0 estimate` in the EDM convention x = x0 + sigma * eps.

Randomness. `generator` is None (torch's global RNG), one `torch.Generator`, or a sequence of one
generator per image. A single generator is first split into per-image generators: image i gets
a seed that is the i-th draw from it (`per_image_generators`), and all of image i's noise comes from
its own generator. So with the same seed, image i's result does not depend on how many images
follow it in the batch, and a list of generators reproduces EDM's per-image seeds exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

Generators = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[dict], None] | None


def per_image_generators(generator: Generators, batch: int) -> list[torch.Generator] | None:
    """One CPU generator per image (see the module docstring); a list is checked and passed through."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device)
        return [torch.Generator().manual_seed(int(s)) for s in seeds]
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} images")
    return gens


def randn_like(x: Tensor, generators: list[torch.Generator] | None) -> Tensor:
    """Standard normal noise shaped like x, drawn image by image from each image's generator."""
    if generators is None:
        return torch.randn_like(x)
    noise = [
        torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32)
        for g in generators
    ]
    return torch.stack(noise).to(device=x.device, dtype=x.dtype)


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The PF-ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3 with sigma(t) = t)."""
    return (x - denoised) / sigma


def _sigma_batch(sigma: Tensor, x: Tensor) -> Tensor:
    return x.new_full((x.shape[0],), float(sigma))


def _steps(sigmas: Tensor, progress: bool, desc: str):
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must be a 1-D descending schedule that ends in 0")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("sigmas must be descending")
    return tqdm(range(len(sigmas) - 1), desc=desc, disable=not progress, leave=False)


def _report(callback: Callback, i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "denoised": denoised})


@torch.no_grad()
def sample_euler(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """Euler's method on the PF-ODE (paper eq. 7; deterministic, `generator` unused). First order."""
    for i in _steps(sigmas, progress, "euler"):
        denoised = denoiser(x, _sigma_batch(sigmas[i], x))
        _report(callback, i, x, sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i]).to(x.dtype)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a second-order multistep PF-ODE solver.

    In t = -log(sigma), the data-prediction ODE is solved exactly for a linear-in-t interpolation
    of D: x' = (sigma'/sigma) x - expm1(-h) D_hat with D_hat = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},
    r = h_{i-1} / h_i. The first step is first order (DDIM); the step to sigma = 0 returns D.
    """
    old_denoised, h_last = None, None
    for i in _steps(sigmas, progress, "dpm++2m"):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, _sigma_batch(s, x))
        _report(callback, i, x, s, denoised)
        if s_next == 0:
            x = denoised
            break
        h = torch.log(s / s_next)
        if old_denoised is None:
            d_hat = denoised
        else:
            r = h_last / h
            d_hat = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (s_next / s).to(x.dtype) * x - torch.expm1(-h).to(x.dtype) * d_hat
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_euler_maruyama(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """Euler-Maruyama on the reverse-time VE SDE (Song et al. 2021's "reverse diffusion" predictor).

    x' = x + (sigma^2 - sigma'^2) * score + sqrt(sigma^2 - sigma'^2) * z, with the score
    (D(x, sigma) - x) / sigma^2 (Tweedie, eq. 8). The step to sigma' = 0 returns D(x, sigma) without
    noise: the last step is the posterior mean at the smallest noise level, not a noisy sample.

    Each step injects more noise than it leaves room for (variance sigma^2 - sigma'^2 on top of the
    shrunken (sigma'/sigma)^2 x, where sigma'^2 is the target), so it is only accurate with many small
    steps: at 30-40 Karras steps on a natural image it leaves visible coloured noise. The presets use
    `sample_euler_ancestral`, which has the same drift and the exact Gaussian noise; this sampler is
    kept for comparisons (and converges to the same SDE as steps grow).
    """
    return _sde_loop(
        _maruyama_step, "euler-maruyama", denoiser, x, sigmas, generator, callback, progress
    )


def _sde_loop(step, desc, denoiser, x, sigmas, generator, callback, progress) -> Tensor:
    """One network evaluation per step, then `step(x, sigma, sigma', D, generators)`."""
    gens = per_image_generators(generator, x.shape[0])
    for i in _steps(sigmas, progress, desc):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, _sigma_batch(s, x))
        _report(callback, i, x, s, denoised)
        x = step(x, s, s_next, denoised, gens)
    return x


def _maruyama_step(x: Tensor, s: Tensor, s_next: Tensor, denoised: Tensor, gens) -> Tensor:
    if s_next == 0:
        return denoised
    dvar = (s**2 - s_next**2).to(x.dtype)
    return x + dvar / s.to(x.dtype) ** 2 * (denoised - x) + dvar.sqrt() * randn_like(x, gens)


@torch.no_grad()
def sample_euler_ancestral(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """The reverse VE SDE discretised by ancestral steps (paper eq. 5; Song et al. 2021, eq. 47 for
    SMLD; the "Euler ancestral" step of the diffusion samplers people use).

    With r = (sigma'/sigma)^2 the step is x' = r x + (1 - r) D(x, sigma) + sigma' sqrt(1 - r) z: the
    same drift as Euler-Maruyama, and the noise of the Gaussian q(x_sigma' | x_sigma, x0 = D), so x'
    carries noise of level sigma' as the next step assumes, at any step size. Equivalently an Euler
    step of the PF-ODE down to sigma'^2/sigma followed by fresh noise up to sigma'. The step to 0
    returns D(x, sigma).
    """
    return _sde_loop(
        _ancestral_step, "euler-ancestral", denoiser, x, sigmas, generator, callback, progress
    )


def _ancestral_step(x: Tensor, s: Tensor, s_next: Tensor, denoised: Tensor, gens) -> Tensor:
    if s_next == 0:
        return denoised
    r = ((s_next / s) ** 2).to(x.dtype)
    return r * x + (1 - r) * denoised + (s_next.to(x.dtype) * (1 - r).sqrt()) * randn_like(x, gens)


@torch.no_grad()
def sample_consistency(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """Consistency-model sampling (Song et al. 2023, Algorithm 1), started at sigmas[0].

    One step is x0 = f(x, sigmas[0]) (paper eq. 15). Each further nonzero sigma re-noises,
    x = x0 + sqrt(sigma^2 - sigma_min^2) z (sigma_min from the denoiser, 0 if it has none), and
    applies f again. With a schedule [sigma, 0] this is exactly one network evaluation.
    """
    gens = per_image_generators(generator, x.shape[0])
    sigma_min = float(getattr(denoiser, "sigma_min", 0.0))
    denoised = x
    for i in _steps(sigmas, progress, "consistency"):
        s = sigmas[i]
        if i > 0:
            x = denoised + (s**2 - min(sigma_min, float(s)) ** 2).sqrt().to(x.dtype) * randn_like(
                x, gens
            )
        denoised = denoiser(x, _sigma_batch(s, x))
        _report(callback, i, x, s, denoised)
        if sigmas[i + 1] == 0:
            break
    return denoised


def sample_dps(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    measurement: Tensor,
    operator: Callable[[Tensor], Tensor],
    zeta: float = 1.0,
    generator: Generators = None,
    callback: Callback = None,
    progress: bool = False,
) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2022, Algorithm 1) on the VE SDE (paper eq. 16-17).

    Each step is the ancestral SDE step of `sample_euler_ancestral` followed by the DPS correction
    x' <- x' - zeta * grad_x ||y - A(D(x, sigma))||_2, where y = `measurement` and A = `operator`
    (differentiable; it maps the denoiser's [-1,1] estimate into y's space). The norm is taken per
    image, as in the reference code, so each image's gradient is independent of the batch.
    Costs one network evaluation plus one backward pass per step.
    """
    gens = per_image_generators(generator, x.shape[0])
    for i in _steps(sigmas, progress, "dps"):
        s, s_next = sigmas[i], sigmas[i + 1]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            denoised = denoiser(x_in, _sigma_batch(s, x_in))
            residual = (measurement - operator(denoised)).flatten(1).norm(dim=1)
            grad = torch.autograd.grad(residual.sum(), x_in)[0]
        denoised = denoised.detach()
        _report(callback, i, x, s, denoised)
        with torch.no_grad():
            x = _ancestral_step(x, s, s_next, denoised, gens) - zeta * grad
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "consistency": sample_consistency,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "euler_maruyama": sample_euler_maruyama,
    "dps": sample_dps,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """A sampler by name: consistency, dpmpp_2m (ODE), euler (ODE), euler_ancestral (SDE),
    euler_maruyama (SDE, needs many steps), dps."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)}") from None
