"""The convex-interpolation baseline for the perception-distortion trade-off (paper section 4.4).

Yan et al. (2022) show that when distortion is MSE and perception is the W2 distance,
x_alpha = (1 - alpha) x_mse + alpha x_perceptual traverses the optimal trade-off between the
MSE-optimal decode (alpha = 0) and a perfect-realism decode (alpha = 1). The paper compares this
with traversing sigma; this baseline needs two decodes (x_hat and an enhanced image) per point.
"""

from __future__ import annotations

import torch
from torch import Tensor


def interpolate(x_mse: Tensor, x_perceptual: Tensor, alpha: float | Tensor) -> Tensor:
    """(1 - alpha) * x_mse + alpha * x_perceptual, alpha in [0, 1] (a float or one per image)."""
    if x_mse.shape != x_perceptual.shape:
        raise ValueError(f"shapes differ: {tuple(x_mse.shape)} vs {tuple(x_perceptual.shape)}")
    a = torch.as_tensor(alpha, dtype=x_mse.dtype, device=x_mse.device)
    if bool(((a < 0) | (a > 1)).any()):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if a.ndim == 1:
        a = a.reshape(-1, *([1] * (x_mse.ndim - 1)))
    return torch.lerp(x_mse, x_perceptual, a)
