"""Exit scores as they run inside exported graphs (torch; higher = more confident). The numpy twins that calibration
uses are in `edgeexit.calibrate.scores`; both compute the same thing in float32."""

from __future__ import annotations

from typing import Callable

import torch

from edgeexit.calibrate.scores import BRANCH_KINDS, check_kind
from edgeexit.errors import ConfigError


def score_fn_torch(kind: str) -> Callable:
    """Return `fn(logits [B, C], conf [B] | [B, 1] | None = None) -> score [B]` computing `kind` in torch.

    Uses only softmax, log_softmax, max, topk, mul, sum and reshape, so it exports to ONNX as is.
    """
    check_kind(kind)

    if kind in BRANCH_KINDS:
        def branch(logits: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
            if conf is None:
                raise ConfigError(f"score kind {kind!r} reads the exit's confidence branch, none was given",
                                  expected="conf [B] or [B, 1]")
            return conf.reshape(conf.shape[0])
        return branch

    if kind == "max_softmax":
        def max_softmax(logits: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
            return torch.softmax(logits, dim=-1).max(dim=-1).values
        return max_softmax

    if kind == "margin":
        def margin(logits: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
            top2 = torch.topk(torch.softmax(logits, dim=-1), 2, dim=-1).values
            return top2[..., 0] - top2[..., 1]
        return margin

    def neg_entropy(logits: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
        return (torch.softmax(logits, dim=-1) * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    return neg_entropy
