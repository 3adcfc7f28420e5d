"""The budget-aware gater (Addad, Lechervy, Jurie, HAL hal-04683503) as it runs inside exported segments:
P_k = σ(MLP(s_k)) from the confidence features of exit k's logits. Its training objectives live in
`edgeexit.train.gater`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from edgeexit.errors import ConfigError, ShapeError
from edgeexit.models.scores import score_fn_torch

FEATURES = ("confidence", "margin", "entropy")
_EXIT_SCORE = {"confidence": "max_softmax", "margin": "margin", "entropy": "neg_entropy"}  # Addad et al. Eq. 6-8


def exit_features(logits: Tensor, features: Sequence[str] = ("confidence", "entropy")) -> Tensor:
    """Confidence features s_k of one exit, a [B, F] tensor in the order of `features` (Eq. 6-8):

        confidence  s = max_c softmax_c(f^k(x))                              (Eq. 6)
        entropy     s = Σ_c softmax_c(f^k(x))·log softmax_c(f^k(x))          (Eq. 7, i.e. −H: higher = surer)
        margin      s = max_c softmax_c − second largest softmax_c           (Eq. 8)

    Plain torch ops only (softmax, log_softmax, topk), so it exports inside an ONNX segment.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ShapeError("exit logits must be [B, C] with C ≥ 2", got=tuple(logits.shape))
    unknown = [name for name in features if name not in _EXIT_SCORE]
    if unknown:
        raise ConfigError("unknown gater feature", got=unknown, expected=" | ".join(FEATURES))
    # The same formulas as the exit scores the runtime uses (edgeexit.calibrate.scores), so they are written once.
    return torch.stack([score_fn_torch(_EXIT_SCORE[name])(logits) for name in features], dim=1)


class Gater(nn.Module):
    """P_k = σ(MLP(s_k)) for every exit k (Addad et al., hal-04683503, Sec. 3, "Estimating the probability ...").

    One MLP, shared by all exits, as in the paper (a single φ, P^k_{i;φ} = σ(MLP(s^k_{i;θ}))): one hidden
    layer of 500 units (Supplementary B); ReLU between the layers (the paper names no activation).
    Default features are confidence and entropy, the paper's best setting on CIFAR (Table 1); it used
    all three on ImageNet.
    """

    def __init__(self, features: Sequence[str] = ("confidence", "entropy"), hidden: int = 500):
        super().__init__()
        features = tuple(features)
        if not features or any(f not in FEATURES for f in features) or len(set(features)) != len(features):
            raise ConfigError("gater features must be distinct names from the list", got=features,
                              expected=" | ".join(FEATURES))
        if hidden < 1:
            raise ConfigError("gater hidden width must be positive", got=hidden)
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(len(features), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, logits: Sequence[Tensor]) -> Tensor:
        """P: [B, K], P[:, k] = σ(MLP(s_k)) for the logits of exit k."""
        if isinstance(logits, Tensor) or len(logits) == 0:
            raise ShapeError("the gater needs a non-empty list with one [B, C] logits tensor per exit",
                             got=type(logits).__name__)
        return torch.stack([gater_score(out, self) for out in logits], dim=1)


def gater_score(logits: Tensor, gater: Gater) -> Tensor:
    """P_k = σ(MLP(s_k)) of one exit from its logits [B, C], a [B] tensor: the exit score at k."""
    return torch.sigmoid(gater.mlp(exit_features(logits, gater.features))).squeeze(1)


class GaterScore(nn.Module):
    """The exit score P_k = gater(logits) inside an exported segment; a module, so the gater's weights are part of
    the exported graph."""

    def __init__(self, gater: Gater):
        super().__init__()
        self.gater = gater

    def forward(self, logits: Tensor, conf: Tensor | None = None) -> Tensor:
        return gater_score(logits, self.gater)
