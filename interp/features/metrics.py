"""How well a dictionary reconstructs its hook: pure functions of captured tensors.

x, recon: [tokens d] (the hooked activation and the dictionary's output); acts: [tokens d_sae].

- l0: features active per token, averaged.
- mse: squared error per element, averaged (SAELens's "mse").
- explained_variance: 1 - sum |x - recon|^2 / sum |x - mean(x)|^2 over tokens (the mean is
  over tokens, per dimension), so 1 is perfect and 0 is no better than the mean activation.
- cosine: cos(x, recon) per token, averaged.
- loss_recovered: (L_zero - L_spliced) / (L_zero - L_clean): 1 when the spliced model is as
  good as the clean one, 0 when no better than zero-ablating the hook.
"""

from __future__ import annotations

import torch


def l0(acts: torch.Tensor) -> float:
    return float((acts != 0).sum(-1).double().mean())


def mse(x: torch.Tensor, recon: torch.Tensor) -> float:
    return float((x.double() - recon.double()).pow(2).mean())


def explained_variance(x: torch.Tensor, recon: torch.Tensor) -> float:
    x, recon = x.double(), recon.double()
    residual = (x - recon).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - residual / total)


def cosine(x: torch.Tensor, recon: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(x.double(), recon.double(), dim=-1).mean())


def loss_recovered(clean: float, spliced: float, zero: float) -> float:
    return (zero - spliced) / (zero - clean)


def reconstruction(x: torch.Tensor, recon: torch.Tensor, acts: torch.Tensor) -> dict[str, float]:
    return {"l0": l0(acts), "explained_variance": explained_variance(x, recon),
            "mse": mse(x, recon), "cosine": cosine(x, recon)}  # fmt: skip
