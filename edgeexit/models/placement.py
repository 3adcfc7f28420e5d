"""Where to put EENet exits: by the share of the network's cost spent before each exit
(Demir & Akbas, arXiv:2409.05336, Sec. 3.4, Fig. 3).

Each distribution gives a target cost rate t_k ∈ (0, 1) for early exit k = 1 … N (N = number of
early exits; the final classifier is not one of them):

    pareto     t_k = 1 − 0.8^k          each exit splits the rest of the network 20 % - 80 %
    fine       t_k = 1 − 0.95^k         … 5 % - 95 %
    golden     t_k = 0.618^(N−k+1)      the last early exit at 61.8 % of the cost, each earlier one at
                                        61.8 % of the next one's (golden ratio 61.8 % - 38.2 %)
    linear     t_k = k / (N+1)          equal cost between consecutive exits
    quadratic  t_k = (k / (N+1))²       cost between consecutive exits growing linearly

The formulas are those of the authors' code (set_thresholds in eksuas/eenets.pytorch; quadratic is
named in the paper only) and they reproduce the "Cost Percent of EE-Blocks" of Tables 7 and 9, e.g.
EENet-110 with 10 exits: Pareto 21, 37, 50, 60, 69, …; Golden 2, 4, 6, …, 25, 39, 63.
"""

from __future__ import annotations

import math
from typing import Sequence

from edgeexit.errors import ConfigError

DISTRIBUTIONS = ("pareto", "golden", "fine", "linear", "quadratic")
GOLDEN = (math.sqrt(5) - 1) / 2  # 0.6180…


def exit_targets(num_exits: int, distribution: str) -> list[float]:
    """Target cost rates t_1 … t_N of the N early exits (increasing, in (0, 1))."""
    if num_exits < 0:
        raise ConfigError("number of exits must be ≥ 0", got=num_exits)
    n = num_exits
    ks = range(1, n + 1)
    if distribution == "pareto":
        return [1 - 0.8**k for k in ks]
    if distribution == "fine":
        return [1 - 0.95**k for k in ks]
    if distribution == "golden":
        return [GOLDEN ** (n - k + 1) for k in ks]
    if distribution == "linear":
        return [k / (n + 1) for k in ks]
    if distribution == "quadratic":
        return [(k / (n + 1)) ** 2 for k in ks]
    raise ConfigError("unknown exit distribution", got=distribution, expected=" | ".join(DISTRIBUTIONS))


def place_exits(cumulative_macs: Sequence[float], num_exits: int, distribution: str) -> list[int]:
    """Block indices after which to attach the N early exits, in increasing order.

    `cumulative_macs[i]` is the cost of the network up to the end of candidate block i, monotone,
    the last entry being the whole model (so the last block is never an early exit: the final
    classifier answers there). Block i has cost rate r_i = cumulative_macs[i] / cumulative_macs[-1].

    Exit k takes the block whose r_i is nearest to t_k (`exit_targets`). Collisions are resolved in
    network order: exit k may only take a block after exit k−1's block and must leave one block for
    each later exit, so it takes the nearest block inside that window. Ties go to the cheaper block.
    Exits therefore never share a block; when targets crowd together (golden with many exits, e.g.)
    they spread over consecutive blocks, as in the paper's Tables 7 and 9.
    """
    costs = [float(c) for c in cumulative_macs]
    if not costs or any(not math.isfinite(c) or c < 0 for c in costs) or costs[-1] <= 0:
        raise ConfigError("cumulative MACs must be finite, non-negative, and end with the full model's cost > 0",
                          got=costs[:8])
    if any(b < a for a, b in zip(costs, costs[1:])):
        raise ConfigError("cumulative MACs must not decrease from one block to the next", got=costs[:8],
                          hint="pass the running total of MACs after each candidate block")
    candidates = len(costs) - 1  # blocks 0 … len-2; the last block is the final classifier's
    if num_exits > candidates:
        raise ConfigError("more early exits than blocks to put them after", got=num_exits,
                          expected=f"at most {candidates} for {len(costs)} blocks")
    rates = [c / costs[-1] for c in costs]
    placed: list[int] = []
    for k, target in enumerate(exit_targets(num_exits, distribution)):
        lo = placed[-1] + 1 if placed else 0
        hi = candidates - (num_exits - k)  # leave a block for each later exit
        best = min(range(lo, hi + 1), key=lambda i: (abs(rates[i] - target), i))
        placed.append(best)
    return placed
