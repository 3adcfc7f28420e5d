"""AEP loss/ensemble (papers/000 Eq. 1-3) and EENet L_v2 (papers/002 Eq. 6-9), checked against
values worked out by hand with plain Python arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from edgeexit.errors import ConfigError, EdgeExitError, ShapeError
from edgeexit.train.losses import (
    aep_ensemble,
    aep_loss,
    aep_predict,
    eenet_loss,
    eenet_outputs,
)


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ce(row: list[float], t: int) -> float:
    return -math.log(softmax(row)[t])


# ------------------------------------------------------------------------------------------- AEP
# Three exits, two samples, three classes. Exit 1 votes class 0, exit 3 votes class 2, so the
# ensemble prediction depends on whether early or late exits weigh more.
O1 = [[4.0, 0.0, 1.0], [3.0, 1.0, 0.0]]
O2 = [[1.0, 2.0, 0.5], [0.0, 2.5, 1.0]]
O3 = [[0.0, 1.0, 5.0], [1.0, 0.0, 4.0]]
Y = [2, 1]

DESC = [3 / 6, 2 / 6, 1 / 6]  # linear, positive, sum 1, decreasing
ASC = [1 / 6, 2 / 6, 3 / 6]
UNIF = [1 / 3, 1 / 3, 1 / 3]
MODES = {  # mode: (loss weights α, output weights β), Table I of papers/000
    "desc": (DESC, DESC),
    "asc": (ASC, ASC),
    "mix": (DESC, ASC),
    "unif": (UNIF, UNIF),
}


def aep_inputs() -> list[torch.Tensor]:
    return [torch.tensor(o, dtype=torch.float64) for o in (O1, O2, O3)]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_aep_loss_by_hand(mode):
    alpha, _ = MODES[mode]
    per_exit = [(ce(o[0], Y[0]) + ce(o[1], Y[1])) / 2 for o in (O1, O2, O3)]  # Eq. 1, batch mean
    expected = alpha[0] * per_exit[0] + alpha[1] * per_exit[1] + alpha[2] * per_exit[2]  # Eq. 2
    got = aep_loss(aep_inputs(), torch.tensor(Y), mode)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_aep_ensemble_by_hand(mode):
    _, beta = MODES[mode]
    expected = [[beta[0] * O1[b][c] + beta[1] * O2[b][c] + beta[2] * O3[b][c] for c in range(3)] for b in range(2)]
    got = aep_ensemble(aep_inputs(), mode)  # raw outputs, no softmax (Eq. 3)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    argmax = [max(range(3), key=lambda c: expected[b][c]) for b in range(2)]
    assert aep_predict(aep_inputs(), mode).tolist() == argmax


def test_aep_modes_differ_where_they_should():
    # Sample 0: desc gives class 0 2.33 vs class 2 1.50; asc gives class 0 1.00 vs class 2 2.83.
    assert aep_predict(aep_inputs(), "desc").tolist()[0] == 0
    assert aep_predict(aep_inputs(), "asc").tolist()[0] == 2
    assert aep_predict(aep_inputs(), "mix").tolist() == aep_predict(aep_inputs(), "asc").tolist()
    y = torch.tensor(Y)
    assert aep_loss(aep_inputs(), y, "mix").item() == pytest.approx(aep_loss(aep_inputs(), y, "desc").item())
    assert aep_loss(aep_inputs(), y, "asc").item() != pytest.approx(aep_loss(aep_inputs(), y, "desc").item())


def test_aep_ensemble_explicit_weights():
    got = aep_ensemble(aep_inputs()[:2], "unif", weights=[0.25, 0.75])
    expected = [[0.25 * O1[b][c] + 0.75 * O2[b][c] for c in range(3)] for b in range(2)]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ConfigError):
        aep_ensemble(aep_inputs(), "unif", weights=[0.5, 0.5])


def test_aep_loss_gradient_reaches_every_exit():
    logits = [t.clone().requires_grad_() for t in aep_inputs()]
    aep_loss(logits, torch.tensor(Y), "desc").backward()
    for t in logits:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_aep_bad_inputs():
    with pytest.raises(ShapeError):
        aep_loss([torch.zeros(2, 3), torch.zeros(2, 4)], torch.tensor([0, 1]), "unif")
    with pytest.raises(ShapeError):
        aep_loss(aep_inputs(), torch.tensor([0, 1, 2]), "unif")
    with pytest.raises(ShapeError):
        aep_loss(aep_inputs(), torch.tensor([0, 3]), "unif")
    with pytest.raises(ShapeError):
        aep_ensemble([], "unif")
    with pytest.raises(EdgeExitError):
        aep_loss(aep_inputs(), torch.tensor(Y), "sideways")


# ---------------------------------------------------------------------------------------- EENets
# Two early exits (0, 1) and the final classifier (2); two samples, two classes.
Z0 = [[2.0, 0.0], [0.0, 1.0]]
Z1 = [[1.0, 1.5], [0.5, 0.0]]
Z2 = [[0.0, 3.0], [2.0, 0.0]]
H0 = [0.7, 0.2]
H1 = [0.4, 0.9]
COSTS = [0.2, 0.5, 1.0]
T = [1, 0]


def eenet_hand(lam: float):
    """Y_i, C_i (Eq. 6-7) and L_v2 (Eq. 9) with explicit arithmetic."""
    Ys = {0: [], 1: [], 2: []}
    Cs = {0: [], 1: [], 2: []}
    for b in range(2):
        y0, y1, y2 = softmax(Z0[b]), softmax(Z1[b]), softmax(Z2[b])
        Y2 = y2
        Y1 = [H1[b] * y1[c] + (1 - H1[b]) * Y2[c] for c in range(2)]
        Y0 = [H0[b] * y0[c] + (1 - H0[b]) * Y1[c] for c in range(2)]
        C2 = COSTS[2]
        C1 = H1[b] * COSTS[1] + (1 - H1[b]) * C2
        C0 = H0[b] * COSTS[0] + (1 - H0[b]) * C1
        for i, (Yi, Ci) in enumerate(((Y0, C0), (Y1, C1), (Y2, C2))):
            Ys[i].append(Yi)
            Cs[i].append(Ci)
    loss = 0.0
    for i in range(3):
        ce_i = (-math.log(Ys[i][0][T[0]]) - math.log(Ys[i][1][T[1]])) / 2
        loss += ce_i + lam * (Cs[i][0] + Cs[i][1]) / 2
    return Ys, Cs, loss


def eenet_inputs(requires_grad: bool = False):
    logits = [torch.tensor(z, dtype=torch.float64, requires_grad=requires_grad) for z in (Z0, Z1, Z2)]
    h = [torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad) for v in (H0, H1)]
    return logits, h


def test_eenet_recursion_by_hand():
    Ys, Cs, _ = eenet_hand(1.0)
    logits, h = eenet_inputs()
    soft_y, soft_c = eenet_outputs(logits, h, COSTS)
    assert len(soft_y) == len(soft_c) == 3
    for i in range(3):
        assert torch.allclose(soft_y[i], torch.tensor(Ys[i], dtype=torch.float64), atol=1e-12)
        assert torch.allclose(soft_c[i], torch.tensor(Cs[i], dtype=torch.float64), atol=1e-12)
        assert torch.allclose(soft_y[i].sum(dim=1), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_eenet_loss_by_hand(lam):
    _, _, expected = eenet_hand(lam)
    logits, h = eenet_inputs()
    assert eenet_loss(logits, h, torch.tensor(T), COSTS, lam=lam).item() == pytest.approx(expected, rel=1e-12)


def test_eenet_loss_default_lambda_is_one():
    logits, h = eenet_inputs()
    assert eenet_loss(logits, h, torch.tensor(T), COSTS).item() == pytest.approx(eenet_hand(1.0)[2], rel=1e-12)


def test_eenet_accepts_probabilities_and_stacked_h():
    logits, h = eenet_inputs()
    probs = [torch.softmax(z, dim=1) for z in logits]
    # [B, E] with a confidence column for the final classifier, which Eq. 6 never uses.
    stacked = torch.stack(h + [torch.tensor([0.123, 0.456], dtype=torch.float64)], dim=1)
    got = eenet_loss(probs, stacked, torch.tensor(T), COSTS, are_probs=True)
    assert got.item() == pytest.approx(eenet_hand(1.0)[2], rel=1e-12)


def test_eenet_loss_clamps_zero_probability():
    probs = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    loss = eenet_loss(probs, [torch.tensor([1.0])], torch.tensor([1]), [0.5, 1.0], are_probs=True)
    assert torch.isfinite(loss) and loss.item() > 20  # −log(eps) on both terms, not inf


def test_eenet_loss_gradients_reach_logits_and_confidences():
    logits, h = eenet_inputs(requires_grad=True)
    eenet_loss(logits, h, torch.tensor(T), COSTS).backward()
    for t in logits + h:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_eenet_bad_inputs():
    logits, h = eenet_inputs()
    with pytest.raises(ConfigError):
        eenet_loss(logits, h, torch.tensor(T), [0.2, 1.0])
    with pytest.raises(ShapeError):
        eenet_loss(logits, h[:1], torch.tensor(T), COSTS)
    with pytest.raises(ShapeError):
        eenet_loss(logits, [torch.zeros(3), torch.zeros(3)], torch.tensor(T), COSTS)
