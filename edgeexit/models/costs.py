"""MACs and parameters of every segment and head, counted with torch.utils.flop_counter (MACs = FLOPs / 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeexit.models.net import EarlyExitNet, _split_head_output


@dataclass
class ExitCosts:
    """Per-exit costs for one input image. `cumulative_macs[k]` is what answering at exit k costs:
    every segment up to k plus every head up to k (the earlier heads ran and declined)."""

    segment_macs: list[int]
    head_macs: list[int]
    segment_params: list[int]
    head_params: list[int]
    cumulative_macs: list[int]
    full_macs: int  # the unsplit model: all segments and the final classifier only

    @property
    def macs_fraction(self) -> list[float]:
        return [c / self.full_macs for c in self.cumulative_macs]


def count_macs(fn, *args) -> tuple[int, object]:
    """(MACs of `fn(*args)` = FLOPs / 2 as torch.utils.flop_counter counts them, its output)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() // 2, out


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_costs(net: EarlyExitNet, in_channels: int, image_size: int) -> ExitCosts:
    """Count MACs of one image through every segment and head (eval mode, no grad)."""
    was_training = net.training
    net.eval()
    x = torch.zeros(1, in_channels, image_size, image_size)
    seg_macs, head_macs = [], []
    with torch.no_grad():
        for segment, head in zip(net.segments, net.heads):
            m, x = count_macs(segment, x)
            seg_macs.append(m)
            h, _ = count_macs(lambda f: _split_head_output(head(f)), x)
            head_macs.append(h)
    net.train(was_training)
    cumulative, total = [], 0
    for s, h in zip(seg_macs, head_macs):
        total += s + h
        cumulative.append(total)
    return ExitCosts(
        segment_macs=seg_macs, head_macs=head_macs,
        segment_params=[_params(s) for s in net.segments], head_params=[_params(h) for h in net.heads],
        cumulative_macs=cumulative, full_macs=sum(seg_macs) + head_macs[-1],
    )
