"""The early-exit network: ordered segments, one exit head per segment, and the unit that gets exported."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn


def _split_head_output(out: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
    """Heads return logits, or (logits, confidence) when they carry a confidence branch (EENet)."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


class EarlyExitNet(nn.Module):
    """`segments[k]` maps the features after exit k-1 to the features at exit k; `heads[k]` answers there.

    The last head is the final classifier, so `forward(x)[-1]` are the logits of the original model.
    `gater` (optional) is the budget-aware gater of Addad et al., hal-04683503 that scores every exit from its logits;
    it is a submodule so that checkpoints carry it, but `forward` never runs it.
    """

    def __init__(self, segments: Sequence[nn.Module], heads: Sequence[nn.Module], *, exit_names: Sequence[str],
                 gater: nn.Module | None = None):
        super().__init__()
        if not (len(segments) == len(heads) == len(exit_names)) or not segments:
            raise ValueError(f"need as many segments as heads and names, got {len(segments)}/{len(heads)}/{len(exit_names)}")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.exit_names = list(exit_names)
        self.gater = gater

    @property
    def num_exits(self) -> int:
        return len(self.segments)

    def forward_exits(self, x: Tensor) -> tuple[list[Tensor], list[Tensor] | None]:
        """Logits of every exit, and the confidence h of every exit when the heads have one (else None)."""
        logits, confidences = [], []
        for segment, head in zip(self.segments, self.heads):
            x = segment(x)
            out, conf = _split_head_output(head(x))
            logits.append(out)
            confidences.append(conf)
        if all(c is None for c in confidences):
            return logits, None
        # The final classifier of an EENet has no confidence branch: it always answers (h = 1).
        return logits, [c if c is not None else torch.ones_like(logits[0][:, 0]) for c in confidences]

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_exits(x)[0]

    def select_exits(self, keep: Sequence[int]) -> "EarlyExitNet":
        """The sub-network with only the exits in `keep` (AEP pruning): the segments between kept exits
        are merged, those after the last kept exit dropped, and the last kept head becomes the final one.
        Modules are shared with this network, not copied."""
        keep = sorted(set(int(k) for k in keep))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_exits:
            raise ValueError(f"exits to keep must be in 0..{self.num_exits - 1}, got {keep}")
        segments, start = [], 0
        for k in keep:
            segments.append(nn.Sequential(*self.segments[start:k + 1]))
            start = k + 1
        return EarlyExitNet(segments, [self.heads[k] for k in keep], exit_names=[self.exit_names[k] for k in keep],
                            gater=self.gater)

    def unsplit(self) -> nn.Module:
        """The original single-exit model: all segments, then the final classifier."""
        return UnsplitModel(self)

    def exit_segment(self, k: int, score_fn: "ScoreFn", *, temperature: float = 1.0) -> "ExitSegment":
        """Segment k with its head and exit score (on the logits divided by `temperature`, see ExitSegment): the
        unit exported to ONNX / TensorRT / ExecuTorch."""
        return ExitSegment(self.segments[k], self.heads[k], score_fn, final=k == self.num_exits - 1,
                           temperature=temperature)


ScoreFn = Callable[[Tensor, Tensor | None], Tensor]


class ExitSegment(nn.Module):
    """features -> (features, logits, score) at an intermediate exit, features -> (logits, score) at the last.

    The score (higher = more confident) is computed inside the graph so that the runtime only compares
    it with the exit's threshold. `temperature` T (temperature scaling, fitted at calibration) is baked into the
    graph: the score reads logits / T while the `logits` output stays unscaled, so no runtime applies T itself.
    """

    def __init__(self, body: nn.Module, head: nn.Module, score_fn: ScoreFn, *, final: bool, temperature: float = 1.0):
        super().__init__()
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.body, self.head, self.final = body, head, final
        self.score_fn = score_fn
        self.temperature = float(temperature)

    def forward(self, x: Tensor, head_only: bool = False) -> tuple[Tensor, ...]:
        features = x if head_only else self.body(x)
        logits, conf = _split_head_output(self.head(features))
        if conf is None and self.final:
            # As in forward_exits: the final classifier has no confidence branch and always answers (h = 1).
            conf = torch.ones_like(logits[:, 0])
        # T = 1 leaves the graph as it was (no division node)
        score = self.score_fn(logits if self.temperature == 1.0 else logits / self.temperature, conf)
        if self.final or head_only:
            return logits, score
        return features, logits, score


class UnsplitModel(nn.Module):
    """The backbone with only its final classifier: the reference every saving is measured against."""

    def __init__(self, net: EarlyExitNet):
        super().__init__()
        self.body = nn.Sequential(*net.segments)
        self.head = net.heads[-1]

    def forward(self, x: Tensor) -> Tensor:
        return _split_head_output(self.head(self.body(x)))[0]
