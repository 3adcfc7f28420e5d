"""Self-distillation from the final exit and gradient equilibrium: two training options that combine with every
method (aep, eenet, budget) and with --freeze-backbone.

Self-distillation (Phuong & Lampert, "Distillation-Based Training for Multi-Exit Architectures", ICCV 2019;
Li et al., "Improved Techniques for Training Adaptive Deep Networks" (IMTA), ICCV 2019, code
github.com/kalviny/IMTA, utils.py KDLoss.loss_fn_kd). Every early exit i < K learns from the final exit K:

    ℓ_i = (1 − α)·CE(y, z_i) + α·T²·KL( softmax(z_K / T) ‖ softmax(z_i / T) ),   i < K
    ℓ_K = CE(y, z_K)

with the teacher z_K detached (IMTA: `soft_targets.detach()`), so the final exit learns from the labels only and
distillation never pulls it towards its students. IMTA's defaults are α = 0.9 (`--gamma`) and T = 3 (`-T`).
This exact form is IMTA's code (read: utils.py, main_IMTA.py, args.py). The teacher is the final exit (IMTA's
validation passes output[-1] as the soft target); an ensemble teacher is not offered. Of Phuong & Lampert only the
abstract could be read here (early exits are trained to match the output probabilities of the later, more accurate
exits); the temperature adaptation they describe is not implemented: T is fixed.
One deliberate difference: IMTA's `nn.KLDivLoss()` uses PyTorch's old default reduction 'mean', which averages
over batch AND classes (the KL divided by C); here the KL is summed over classes and averaged over the batch
('batchmean', the mathematical KL), so α keeps its meaning for any number of classes.

Gradient equilibrium (IMTA, Sec. 3.1; code models/msdnet_ge.py, `gradient_rescale`). The forward pass is
unchanged; in the backward pass, at the output of segment k (0-based, K exits):

    x_k ← rescale(x_k, 1 / (K − k))          before head k and the later segments read it
    x_k ← rescale(x_k, K − k − 1)            on the path to segment k+1 only

so the gradient reaching segment k's output is

    G_k = ( ∂ℓ_k/∂x_k + (K − k − 1)·J_{k+1}ᵀ G_{k+1} ) / (K − k),      G_{K−1} = ∂ℓ_{K−1}/∂x_{K−1}

i.e. exit k's own head weighs 1/(K−k) and the K−k−1 later exits together (K−k−1)/(K−k): the shared early
layers are no longer dominated by the sum of the many later exits' gradients. Heads' own parameters get their
unscaled gradients (the rescale sits on the head's input).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeexit.errors import ConfigError

TEACHERS = ("final",)


def check_distill(distill: Sequence[float] | None) -> tuple[float, float] | None:
    """(T, α) with T > 0 finite and 0 <= α <= 1, or None (no distillation)."""
    if distill is None:
        return None
    try:
        T, alpha = (float(v) for v in distill)
    except (TypeError, ValueError):
        raise ConfigError("--distill takes a temperature and a weight", got=distill, expected="T,alpha e.g. 3,0.9",
                          hint="IMTA's defaults are T = 3, alpha = 0.9") from None
    if not (0 < T < float("inf")) or not (0 <= alpha <= 1):
        raise ConfigError("--distill needs T > 0 (finite) and 0 <= alpha <= 1", got=f"T={T}, alpha={alpha}",
                          expected="T,alpha e.g. 3,0.9", hint="alpha is the weight of the distillation term")
    return T, alpha


def parse_distill(text: str | None) -> tuple[float, float] | None:
    """'T,alpha' from the command line."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ConfigError("bad --distill", got=text, expected="T,alpha e.g. 3,0.9",
                          hint="a temperature and the weight of the distillation term, comma-separated")
    try:
        return check_distill([float(p) for p in parts])
    except ValueError:
        raise ConfigError("bad --distill", got=text, expected="two numbers T,alpha e.g. 3,0.9") from None


def distill_kl(student: Tensor, teacher: Tensor, T: float) -> Tensor:
    """Per-sample T²·KL(softmax(teacher/T) ‖ softmax(student/T)), a [B] tensor; the teacher is detached."""
    p_teacher = torch.softmax(teacher.detach() / T, dim=1)
    log_p_teacher = torch.log_softmax(teacher.detach() / T, dim=1)
    log_p_student = torch.log_softmax(student / T, dim=1)
    return (T * T) * (p_teacher * (log_p_teacher - log_p_student)).sum(dim=1)


def distilled_exit_losses(logits: Sequence[Tensor], ce: Tensor, distill: tuple[float, float] | None) -> Tensor:
    """Per-sample, per-exit losses [B, E]: ℓ_i = (1 − α)·CE_i + α·T²·KL_i for the early exits, ℓ_K = CE_K
    (see the module docstring); `ce` is the [B, E] cross-entropy. Without distillation, `ce` itself."""
    if distill is None:
        return ce
    T, alpha = distill
    teacher = logits[-1]
    cols = [(1 - alpha) * ce[:, i] + alpha * distill_kl(out, teacher, T) for i, out in enumerate(logits[:-1])]
    return torch.stack([*cols, ce[:, -1]], dim=1)


class GradientRescale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def gradient_rescale(x: Tensor, scale: float) -> Tensor:
    return GradientRescale.apply(x, float(scale))


def equilibrium_forward(segments: Sequence[nn.Module], heads: Sequence[nn.Module], x: Tensor
                        ) -> tuple[list[Tensor], list[Tensor] | None]:
    """EarlyExitNet.forward_exits with IMTA's gradient equilibrium (module docstring): same outputs, rescaled
    gradients at every segment boundary."""
    K = len(segments)
    logits, confidences = [], []
    for k, (segment, head) in enumerate(zip(segments, heads)):
        x = gradient_rescale(segment(x), 1.0 / (K - k))
        out = head(x)
        out, conf = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        logits.append(out)
        confidences.append(conf)
        if k < K - 1:
            x = gradient_rescale(x, K - k - 1)
    if all(c is None for c in confidences):
        return logits, None
    # as EarlyExitNet.forward_exits: the final classifier of an EENet always answers (h = 1)
    return logits, [c if c is not None else torch.ones_like(logits[0][:, 0]) for c in confidences]
