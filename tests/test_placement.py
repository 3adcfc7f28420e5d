"""EENet exit placement by cost distribution (papers/002 Sec. 3.4, Fig. 3, Tables 7 and 9)."""

from __future__ import annotations

import random

import pytest

from edgeexit.errors import ConfigError
from edgeexit.models.placement import DISTRIBUTIONS, exit_targets, place_exits


def test_targets_by_hand():
    assert exit_targets(3, "pareto") == pytest.approx([0.2, 0.36, 0.488])
    assert exit_targets(3, "fine") == pytest.approx([0.05, 0.0975, 0.142625])
    assert exit_targets(3, "golden") == pytest.approx([0.6180339887**3, 0.6180339887**2, 0.6180339887])
    assert exit_targets(3, "linear") == pytest.approx([0.25, 0.5, 0.75])
    assert exit_targets(3, "quadratic") == pytest.approx([0.0625, 0.25, 0.5625])
    assert exit_targets(0, "pareto") == []


def test_targets_reproduce_the_papers_golden_and_pareto_rows():
    # Table 9, EENet-110 G.Ratio, 6 exits: 6, 10, 15, 25, 39, 63 (% of the cost).
    assert [round(100 * t) for t in exit_targets(6, "golden")] == [6, 9, 15, 24, 38, 62]
    # Table 7, EENet-110 Pareto, 10 exits: 21, 37, 50, 60, 69, 74, 80, 83, 87, 91, within 2 points of
    # the targets (an exit goes after a whole block, and its own head adds cost).
    paper = [21, 37, 50, 60, 69, 74, 80, 83, 87, 91]
    for t, p in zip(exit_targets(10, "pareto"), paper):
        assert abs(p - 100 * t) <= 2


# 20 blocks of 5 % each: candidate rates 0.05 … 0.95 at indices 0 … 18 (index 19 is the full model).
UNIFORM = [5.0 * (i + 1) for i in range(20)]
# An uneven network: rates 0.02 0.05 0.10 0.18 0.30 0.45 0.60 0.72 0.85 1.0.
UNEVEN = [2, 5, 10, 18, 30, 45, 60, 72, 85, 100]


@pytest.mark.parametrize("costs,distribution,k,expected", [
    # pareto .2 .36 .488 -> .20 (3), .35 (6, |.01| vs .40 |.04|), .50 (9, |.012| vs .45 |.038|)
    (UNIFORM, "pareto", 3, [3, 6, 9]),
    # fine .05 .0975 .1426 -> .05 .10 .15
    (UNIFORM, "fine", 3, [0, 1, 2]),
    # golden .236 .382 .618 -> .25 (4) .40 (7) .60 (11)
    (UNIFORM, "golden", 3, [4, 7, 11]),
    (UNIFORM, "linear", 3, [4, 9, 14]),
    # quadratic .0625 .25 .5625 -> .05 (0) .25 (4) .55 (10)
    (UNIFORM, "quadratic", 3, [0, 4, 10]),
    # pareto .2 .36 .488 on UNEVEN -> .18 (3), .30 (4, |.06| vs .45 |.09|), .45 (5)
    (UNEVEN, "pareto", 3, [3, 4, 5]),
    # fine .05 .0975 .1426 -> .05 (1), .10 (2), .18 (3, |.037| vs .10 |.043|)
    (UNEVEN, "fine", 3, [1, 2, 3]),
    # golden .146 .236 .382 .618 -> .18 (3), then .18 is taken: .30 (4), .45 (5), .60 (6)
    (UNEVEN, "golden", 4, [3, 4, 5, 6]),
    # linear .2 .4 .6 .8 -> .18 (3) .45 (5) .60 (6) .85 (8)
    (UNEVEN, "linear", 4, [3, 5, 6, 8]),
    # quadratic .04 .16 .36 .64 -> .05 (1) .18 (3) .30 (4, |.06| vs .45 |.09|) .60 (6)
    (UNEVEN, "quadratic", 4, [1, 3, 4, 6]),
])
def test_place_exits_by_hand(costs, distribution, k, expected):
    assert place_exits(costs, k, distribution) == expected


def test_collisions_push_exits_to_the_next_free_block():
    # Rates .1 .6 .7 .8 .9 | 1: fine targets are all near .1, so exits take blocks 0, 1, 2 in turn.
    assert place_exits([10, 60, 70, 80, 90, 100], 3, "fine") == [0, 1, 2]
    # Every candidate block used once: the window leaves room for later exits.
    assert place_exits([10, 60, 70, 80, 90, 100], 5, "pareto") == [0, 1, 2, 3, 4]


def test_ties_go_to_the_cheaper_block():
    assert place_exits([25, 75, 100], 1, "linear") == [0]  # .25 and .75 are both .25 from .5


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_placement_is_deterministic_increasing_and_leaves_the_final_block(distribution):
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(2, 15)
        costs = sorted(rng.uniform(0.5, 100) for _ in range(n))
        k = rng.randint(1, n - 1)
        placed = place_exits(costs, k, distribution)
        assert placed == place_exits(costs, k, distribution)
        assert len(placed) == k and all(a < b for a, b in zip(placed, placed[1:]))
        assert 0 <= placed[0] and placed[-1] <= n - 2


def test_bad_inputs():
    with pytest.raises(ConfigError):
        place_exits(UNIFORM, 20, "linear")  # only 19 blocks before the full model
    with pytest.raises(ConfigError):
        place_exits([10, 5, 20], 1, "linear")
    with pytest.raises(ConfigError):
        place_exits([], 1, "linear")
    with pytest.raises(ConfigError):
        place_exits(UNIFORM, 2, "cubic")
    with pytest.raises(ConfigError):
        exit_targets(-1, "fine")
