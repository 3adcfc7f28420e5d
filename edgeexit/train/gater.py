"""Budget-aware early exiting (Addad, Lechervy, Jurie 2024, papers/003, Sec. 3): the gater and its
bi-level training objectives.

A small MLP (the gater, parameters φ) reads confidence features of each exit's softmax and gives
P_k = σ(MLP(s_k)), the probability that the sample is confident enough to leave at exit k. From the
P_k follow the exit distribution Pr(k|x) (Eq. 5) and its sharpened form A_k (Eq. 9), which weight the
per-exit loss ℓ^CE_k + λ·Cost^k of the network (inner problem, parameters θ) and of the gater (outer
problem), Eq. 10-12.

Exits are in network order, the last being the final classifier; K = number of exits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.func import functional_call

from edgeexit.errors import ConfigError, ShapeError
from edgeexit.models.gater import Gater
from edgeexit.train.distill import distilled_exit_losses
from edgeexit.train.losses import check_exit_costs, exit_cross_entropy


def exit_probabilities(P: Tensor) -> Tensor:
    """Pr(k|x) from the per-exit P_k, [B, K] -> [B, K] (papers/003, Eq. 5):

        Pr(1|x) = P_1
        Pr(k|x) = P_k·Π_{j<k}(1 − P_j)          1 < k < K
        Pr(K|x) = Π_{j<K}(1 − P_j)              (the last exit takes every sample still running)

    so Σ_k Pr(k|x) = 1; the last column of P is not used (equivalently P_K := 1).
    """
    if P.dim() != 2 or P.shape[1] < 1:
        raise ShapeError("P must be [B, K]", got=tuple(P.shape))
    columns, survive = [], torch.ones_like(P[:, 0])
    for k in range(P.shape[1] - 1):
        columns.append(P[:, k] * survive)
        survive = survive * (1 - P[:, k])
    columns.append(survive)
    return torch.stack(columns, dim=1)


def sharpen(Pr: Tensor, T: float = 0.5) -> Tensor:
    """A_k = Pr(k|x)^{1/T} / Σ_j Pr(j|x)^{1/T} (papers/003, Eq. 9); T = 0.5 in the paper."""
    if not T > 0:
        raise ConfigError("temperature T must be positive", got=T, expected="T > 0, the paper uses 0.5")
    powered = Pr.pow(1.0 / T)
    return powered / powered.sum(dim=1, keepdim=True)


def exit_weights(logits: Sequence[Tensor], gater: Gater, T: float = 0.5) -> Tensor:
    """A: [B, K] = sharpen(exit_probabilities(gater(logits)), T) (Eq. 5, 9)."""
    return sharpen(exit_probabilities(gater(logits)), T)


def _objective(ce: Tensor, weights: Tensor, costs: list[float], lam: float) -> Tensor:
    """(1/N) Σ_i Σ_k weights_{i,k}·(ℓ^CE_{i,k} + λ·Cost^k)."""
    cost = torch.tensor(costs, dtype=ce.dtype, device=ce.device)
    return (weights * (ce + lam * cost)).sum(dim=1).mean()


def inner_loss(logits: Sequence[Tensor], target: Tensor, costs: Sequence[float], gater: Gater, *,
               lam: float = 2.0, T: float = 0.5, detach_a: bool = False,
               distill: tuple[float, float] | None = None) -> Tensor:
    """The network's objective, inner problem of Eq. 10 (papers/003), minimised over θ:

        L_inner = (1/N) Σ_i Σ_k (A^k_{i;φ}(s^k_{i;θ}) + 1)·(ℓ^CE_θ(ŷ^k_i, y_i) + λ·Cost^k)

    (Eq. 4 writes the same loss with Pr(k|x) + 1; Eq. 10, the training objective, uses the sharpened A.)

    Cost^k is a constant per exit: pass the cost rate, cumulative MACs to exit k / full MACs (the
    paper does not say how it normalises Cost; λ = 2 only makes sense for costs of order 1).
    Gradients (Eq. 11): θ receives (A+1)·∂ℓ^CE/∂θ and (ℓ^CE + λ·Cost)·∂A/∂θ, because the features
    s^k_θ come from the network's logits; φ receives nothing (the gater's parameters are read
    detached), so one backward of this loss never moves the gater. `detach_a=True` drops the
    ∂A/∂θ term (A as a constant sample weight), which is not what Eq. 11 says.
    `distill` = (T_kd, α): ℓ^CE of each early exit becomes (1 − α)·CE + α·T_kd²·KL (edgeexit.train.distill).
    """
    ce = distilled_exit_losses(logits, exit_cross_entropy(logits, target), distill)
    costs = check_exit_costs(costs, ce.shape[1])
    frozen = {name: p.detach() for name, p in gater.named_parameters()}
    P = functional_call(gater, frozen, (list(logits),))
    A = sharpen(exit_probabilities(P), T)
    if detach_a:
        A = A.detach()
    return _objective(ce, A + 1, costs, lam)


def outer_loss(logits: Sequence[Tensor], target: Tensor, costs: Sequence[float], gater: Gater, *,
               lam: float = 2.0, T: float = 0.5) -> Tensor:
    """The gater's objective, outer problem of Eq. 10 (papers/003), minimised over φ at θ = θ*:

        L_outer = (1/N) Σ_i Σ_k A^k_{i;φ}(s^k_{i;θ*})·(ℓ^CE_{θ*}(ŷ^k_i, y_i) + λ·Cost^k)

    Everything that comes from the network is detached (θ* fixed), so only φ gets gradients (Eq. 12).
    """
    fixed = [out.detach() for out in logits]
    ce = exit_cross_entropy(fixed, target)
    costs = check_exit_costs(costs, ce.shape[1])
    A = sharpen(exit_probabilities(gater(fixed)), T)
    return _objective(ce, A, costs, lam)
