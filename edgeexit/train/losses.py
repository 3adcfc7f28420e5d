"""Training losses of the early-exit methods edgeexit implements.

- AEP (Sarti et al., papers/000, Sec. III): L = Σ_i α_i·L_i over the exits (Eq. 1-2) and the ensemble
  prediction argmax Σ_i β_i·O_i over the raw exit outputs (Eq. 3).
- EENets (Demir & Akbas, papers/002, Sec. 3.3): the soft recursion of predictions and costs (Eq. 6-7)
  and the loss L_v2 = Σ_{i=0}^{N} CE(y, Ŷ_i) + λ·C_i (Eq. 9).

Every function takes the exits in network order: `logits[0]` is the first early exit and `logits[-1]`
the final classifier.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeexit.aep import aep_weights
from edgeexit.errors import ConfigError, ShapeError
from edgeexit.train.distill import distill_kl, distilled_exit_losses


def _check_logits(logits: Sequence[Tensor]) -> tuple[int, int]:
    """(B, C) shared by every exit's [B, C] output."""
    if isinstance(logits, Tensor) or len(logits) == 0:
        raise ShapeError("exit outputs must be a non-empty list with one [B, C] tensor per exit",
                         got=type(logits).__name__ if isinstance(logits, Tensor) else "an empty list",
                         expected="list[Tensor[B, C]]", hint="pass net(x), the list of every exit's logits")
    shape = tuple(logits[0].shape)
    for i, out in enumerate(logits):
        if out.dim() != 2 or tuple(out.shape) != shape:
            raise ShapeError(f"exit {i} output has the wrong shape", got=tuple(out.shape),
                             expected=f"{shape} like exit 0, i.e. [B, C]")
    return shape


def _check_target(target: Tensor, batch: int, num_classes: int) -> None:
    if target.dim() != 1 or target.shape[0] != batch or target.is_floating_point():
        raise ShapeError("target must hold one class index per sample", got=f"{tuple(target.shape)} {target.dtype}",
                         expected=f"integer tensor of shape ({batch},)")
    if batch and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ShapeError("target holds a class index out of range", got=(int(target.min()), int(target.max())),
                         expected=f"indices in [0, {num_classes})")


def check_exit_costs(costs: Sequence[float], num_exits: int) -> list[float]:
    """The per-exit cost rates as floats; one per exit, finite and non-negative."""
    costs = [float(c) for c in costs]
    if len(costs) != num_exits:
        raise ConfigError("need one cost per exit", got=len(costs), expected=num_exits,
                          hint="costs are cost rates: cumulative MACs to exit k / MACs of the full model")
    if any(not (c == c and 0.0 <= c < float("inf")) for c in costs):
        raise ConfigError("exit costs must be finite and non-negative", got=costs)
    return costs


def exit_cross_entropy(logits: Sequence[Tensor], target: Tensor) -> Tensor:
    """Per-sample, per-exit cross-entropy −log softmax(O_k)[y]: a [B, E] tensor (no reduction)."""
    batch, num_classes = _check_logits(logits)
    _check_target(target, batch, num_classes)
    return torch.stack([F.cross_entropy(out, target, reduction="none") for out in logits], dim=1)


# --------------------------------------------------------------------------------------------- AEP

def aep_loss(logits: Sequence[Tensor], target: Tensor, mode: str, *,
             distill: tuple[float, float] | None = None) -> Tensor:
    """AEP training loss (papers/000, Sec. III, Eq. 1-2):

        L_i = −(1/B) Σ_b Σ_c p_{b,c}·log y_{b,c}    (categorical cross-entropy of exit i, batch mean)
        L   = Σ_{i=1}^{N} α_i·L_i

    with α = `aep_weights(N, mode, "loss")`: linear, strictly positive, summing to 1; DESC and MIX
    decreasing along the network, ASC increasing, UNIF uniform (Table I). The last exit is weighted
    like any other.

    `distill` = (T, α): each early exit's L_i becomes (1 − α)·CE_i + α·T²·KL(softmax(O_N/T) ‖ softmax(O_i/T))
    inside the same Σ α_i·L_i (self-distillation, Phuong & Lampert / IMTA; edgeexit.train.distill).
    """
    ce = distilled_exit_losses(logits, exit_cross_entropy(logits, target), distill)  # [B, N]
    alpha = aep_weights(len(logits), mode, "loss")
    return sum(float(a) * ce[:, i].mean() for i, a in enumerate(alpha))


def aep_ensemble(logits: Sequence[Tensor], mode: str, *, weights: Sequence[float] | None = None) -> Tensor:
    """AEP ensemble output Σ_{i=1}^{N} β_i·O_i (papers/000, Sec. III, Eq. 3), a [B, C] tensor.

    O_i are the raw exit outputs ("linear activation", Fig. 1): no softmax is applied. The prediction
    ŷ = argmax of this tensor (`aep_predict`). β = `aep_weights(N, mode, "output")` (DESC decreasing;
    ASC and MIX increasing; UNIF uniform) unless `weights` gives the β of the exits passed, e.g. the
    training weights of the exits a pruned sub-network keeps.
    """
    _check_logits(logits)
    beta = aep_weights(len(logits), mode, "output") if weights is None else [float(w) for w in weights]
    if len(beta) != len(logits):
        raise ConfigError("need one ensemble weight per exit", got=len(beta), expected=len(logits))
    return sum(float(b) * out for b, out in zip(beta, logits))


def aep_predict(logits: Sequence[Tensor], mode: str, *, weights: Sequence[float] | None = None) -> Tensor:
    """Class index per sample, ŷ = argmax(Σ β_i·O_i) (papers/000, Eq. 3)."""
    return aep_ensemble(logits, mode, weights=weights).argmax(dim=1)


# ------------------------------------------------------------------------------------------ EENets

def _check_confidences(h: Sequence[Tensor] | Tensor, num_exits: int, batch: int) -> list[Tensor]:
    """h_0..h_{N-1} as [B] tensors. The final classifier has no confidence branch; an N+1-th h is ignored."""
    if isinstance(h, Tensor):
        if h.dim() != 2 or h.shape[0] != batch:
            raise ShapeError("confidences must be [B, E-1] or [B, E]", got=tuple(h.shape))
        h = list(h.unbind(dim=1))
    hs = [c.reshape(-1) if c.dim() == 2 and c.shape[-1] == 1 else c for c in h]
    if len(hs) not in (num_exits - 1, num_exits):
        raise ShapeError("need one confidence h per early exit", got=len(hs),
                         expected=f"{num_exits - 1} (or {num_exits}, the last ignored)")
    for i, c in enumerate(hs[: num_exits - 1]):
        if c.dim() != 1 or c.shape[0] != batch:
            raise ShapeError(f"confidence h of exit {i} has the wrong shape", got=tuple(c.shape),
                             expected=f"({batch},) or ({batch}, 1)")
    return hs[: num_exits - 1]


def eenet_outputs(outputs: Sequence[Tensor], h: Sequence[Tensor] | Tensor, costs: Sequence[float], *,
                  are_probs: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """The soft outputs and soft costs of an EENet (papers/002, Sec. 3.3, Eq. 6-7):

        Ŷ_i = h_i·ŷ_i + (1 − h_i)·Ŷ_{i+1},   Ŷ_N = ŷ_N        (Eq. 6)
        C_i = h_i·c_i + (1 − h_i)·C_{i+1},   C_N = c_N        (Eq. 7)

    for i = N−1 … 0, where ŷ_i = softmax of exit i (the recursion mixes probabilities), h_i the
    confidence of early exit i and c_i its cost rate, cumulative MACs up to exit i / MACs of the whole
    network (so c_i ∈ [0, 1] and c_N = 1, as in the paper).

    `outputs`: N+1 tensors [B, C], logits (softmax applied here) or probabilities if `are_probs`.
    `h`: N tensors [B] (or [B, 1]) or one [B, N] tensor; an (N+1)-th confidence for the final
    classifier is accepted and ignored, since Ŷ_N = ŷ_N. `costs`: N+1 cost rates.
    Returns ([Ŷ_0 … Ŷ_N] each [B, C], [C_0 … C_N] each [B]).
    """
    batch, _ = _check_logits(outputs)
    hs = _check_confidences(h, len(outputs), batch)
    costs = check_exit_costs(costs, len(outputs))
    probs = list(outputs) if are_probs else [torch.softmax(out, dim=1) for out in outputs]

    last = probs[-1]
    soft_y = [last]
    soft_c = [torch.full((batch,), costs[-1], dtype=last.dtype, device=last.device)]
    for i in range(len(outputs) - 2, -1, -1):
        hi = hs[i].to(last.dtype)
        soft_y.insert(0, hi[:, None] * probs[i] + (1 - hi[:, None]) * soft_y[0])
        soft_c.insert(0, hi * costs[i] + (1 - hi) * soft_c[0])
    return soft_y, soft_c


def eenet_loss(outputs: Sequence[Tensor], h: Sequence[Tensor] | Tensor, target: Tensor, costs: Sequence[float], *,
               lam: float = 1.0, are_probs: bool = False, eps: float = 1e-12,
               distill: tuple[float, float] | None = None) -> Tensor:
    """EENet loss L_v2 (papers/002, Sec. 3.3, Eq. 9):

        L_v2 = Σ_{i=0}^{N} ( CE(y, Ŷ_i) + λ·C_i )

    summed over every early exit AND the final output (i = 0 … N), with Ŷ_i, C_i from
    `eenet_outputs` (Eq. 6-7). Ŷ_i is a mixture of probabilities, so CE(y, Ŷ_i) = −log Ŷ_i[y]
    (clamped at `eps` so that log stays finite). Both terms are averaged over the batch, as the
    authors' code does (the paper writes the loss for one example). λ = 1 is the value of the
    paper's main MNIST experiments (Sec. 4.2) and of the authors' code.

    `distill` = (T, α) (logits only): each early exit's classification term becomes
    (1 − α)·CE(y, Ŷ_i) + α·T²·KL(softmax(z_N/T) ‖ softmax(z_i/T)), z_i that exit's own logits and the
    final exit's z_N detached (self-distillation, Phuong & Lampert / IMTA; edgeexit.train.distill).
    """
    if distill is not None and are_probs:
        raise ConfigError("distillation needs the exits' logits", got="are_probs=True", expected="logits")
    batch, num_classes = _check_logits(outputs)
    _check_target(target, batch, num_classes)
    soft_y, soft_c = eenet_outputs(outputs, h, costs, are_probs=are_probs)
    floor = max(eps, torch.finfo(soft_y[0].dtype).tiny)
    total = soft_y[0].new_zeros(())
    last = len(soft_y) - 1
    for i, (y_i, c_i) in enumerate(zip(soft_y, soft_c)):
        picked = y_i.gather(1, target[:, None]).squeeze(1)
        term = -picked.clamp_min(floor).log().mean()
        if distill is not None and i < last:
            T, alpha = distill
            term = (1 - alpha) * term + alpha * distill_kl(outputs[i], outputs[-1], T).mean()
        total = total + term + lam * c_i.mean()
    return total
