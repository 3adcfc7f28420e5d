"""Budget-aware gater (papers/003, Sec. 3, Eq. 5-12): features, Pr(k|x), A, and the two bi-level
objectives with the gradients each one is allowed to send, against hand arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from edgeexit.errors import ConfigError, ShapeError
from edgeexit.models.gater import Gater, exit_features, gater_score
from edgeexit.runtime.ort import session_options
from edgeexit.train.gater import (
    exit_probabilities,
    exit_weights,
    inner_loss,
    outer_loss,
    sharpen,
)


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_features_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    got = exit_features(logits, ("confidence", "margin", "entropy"))
    for b, row in enumerate(logits.tolist()):
        p = softmax(row)
        ranked = sorted(p, reverse=True)
        expected = [ranked[0],                               # Eq. 6
                    ranked[0] - ranked[1],                   # Eq. 8
                    sum(q * math.log(q) for q in p)]         # Eq. 7 as written: Σ p log p
        assert got[b].tolist() == pytest.approx(expected, rel=1e-12)
    assert exit_features(logits, ("entropy", "confidence"))[:, 0].tolist() == pytest.approx(got[:, 2].tolist())


P = [[0.3, 0.6, 0.9], [0.8, 0.1, 0.5]]


def test_exit_probabilities_by_hand():
    got = exit_probabilities(torch.tensor(P, dtype=torch.float64))
    expected = [[0.3, 0.7 * 0.6, 0.7 * 0.4],   # Eq. 5: P1, P2(1−P1), (1−P1)(1−P2)
                [0.8, 0.2 * 0.1, 0.2 * 0.9]]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(got.sum(dim=1), torch.ones(2, dtype=torch.float64))
    changed_last = torch.tensor([[0.3, 0.6, 0.0], [0.8, 0.1, 1.0]], dtype=torch.float64)
    assert torch.equal(exit_probabilities(changed_last), got)  # P_K is never used
    assert exit_probabilities(torch.tensor([[0.4]])).tolist() == [[1.0]]


def test_sharpen_by_hand():
    pr = torch.tensor([[0.3, 0.42, 0.28]], dtype=torch.float64)
    sq = [0.3**2, 0.42**2, 0.28**2]  # T = 0.5 -> power 2 (Eq. 9)
    assert sharpen(pr).tolist()[0] == pytest.approx([v / sum(sq) for v in sq], rel=1e-12)
    cube = [0.3**3, 0.42**3, 0.28**3]
    assert sharpen(pr, T=1 / 3).tolist()[0] == pytest.approx([v / sum(cube) for v in cube], rel=1e-12)
    assert torch.allclose(sharpen(pr, T=1.0), pr)
    with pytest.raises(ConfigError):
        sharpen(pr, T=0.0)


# A gater small enough to follow by hand: features = (confidence,), one hidden unit,
# P = σ(1·ReLU(2·conf + 0.5) − 1) = σ(2·conf − 0.5).
def hand_gater() -> Gater:
    g = Gater(("confidence",), hidden=1).double()
    with torch.no_grad():
        g.mlp[0].weight.fill_(2.0)
        g.mlp[0].bias.fill_(0.5)
        g.mlp[2].weight.fill_(1.0)
        g.mlp[2].bias.fill_(-1.0)
    return g


LOGITS = [  # three exits, two samples, two classes
    [[0.5, 0.0], [0.0, 2.0]],
    [[1.0, -1.0], [0.3, 0.2]],
    [[3.0, 0.0], [-1.0, 1.0]],
]
TARGET = [0, 1]
COSTS = [0.25, 0.5, 1.0]


def hand_objectives(logits, lam=2.0, T=0.5):
    """(inner, outer) of Eq. 10 for the hand gater, with explicit arithmetic; also A."""
    inner = outer = 0.0
    As = []
    for b in range(2):
        p = [softmax(logits[k][b]) for k in range(3)]
        P = [sigmoid(2 * max(pk) - 0.5) for pk in p]
        Pr = [P[0], P[1] * (1 - P[0]), (1 - P[0]) * (1 - P[1])]
        w = [v ** (1 / T) for v in Pr]
        A = [v / sum(w) for v in w]
        As.append(A)
        for k in range(3):
            term = -math.log(p[k][TARGET[b]]) + lam * COSTS[k]
            inner += (A[k] + 1) * term
            outer += A[k] * term
    return inner / 2, outer / 2, As


def as_tensors(requires_grad=False):
    return [torch.tensor(z, dtype=torch.float64, requires_grad=requires_grad) for z in LOGITS]


def test_gater_gives_p_per_exit_by_hand():
    g = hand_gater()
    P = g(as_tensors())
    for k in range(3):
        for b in range(2):
            assert P[b, k].item() == pytest.approx(sigmoid(2 * max(softmax(LOGITS[k][b])) - 0.5), rel=1e-12)
        assert torch.equal(gater_score(as_tensors()[k], g), P[:, k])
    _, _, A = hand_objectives(LOGITS)
    assert exit_weights(as_tensors(), g).tolist() == [pytest.approx(a, rel=1e-12) for a in A]


def test_objectives_by_hand_with_paper_defaults():
    inner, outer, _ = hand_objectives(LOGITS)  # λ = 2, T = 0.5
    g, y = hand_gater(), torch.tensor(TARGET)
    assert inner_loss(as_tensors(), y, COSTS, g).item() == pytest.approx(inner, rel=1e-12)
    assert outer_loss(as_tensors(), y, COSTS, g).item() == pytest.approx(outer, rel=1e-12)
    inner1, outer1, _ = hand_objectives(LOGITS, lam=0.5, T=1.0)
    assert inner_loss(as_tensors(), y, COSTS, g, lam=0.5, T=1.0).item() == pytest.approx(inner1, rel=1e-12)
    assert outer_loss(as_tensors(), y, COSTS, g, lam=0.5, T=1.0).item() == pytest.approx(outer1, rel=1e-12)


def test_outer_loss_moves_only_the_gater():
    g, logits = hand_gater(), as_tensors(requires_grad=True)
    outer_loss(logits, torch.tensor(TARGET), COSTS, g).backward()
    assert all(t.grad is None for t in logits)  # θ* is fixed (Eq. 10 outer, Eq. 12)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_inner_loss_moves_only_the_network_and_follows_eq_11():
    g, logits = hand_gater(), as_tensors(requires_grad=True)
    inner_loss(logits, torch.tensor(TARGET), COSTS, g).backward()
    assert all(p.grad is None for p in g.parameters())  # φ is not an inner variable
    # Eq. 11 by central differences of the hand objective: includes (ℓ + λ·Cost)·∂A/∂θ.
    eps = 1e-6
    for k in range(3):
        for b in range(2):
            for c in range(2):
                plus = [[row[:] for row in ex] for ex in LOGITS]
                minus = [[row[:] for row in ex] for ex in LOGITS]
                plus[k][b][c] += eps
                minus[k][b][c] -= eps
                numeric = (hand_objectives(plus)[0] - hand_objectives(minus)[0]) / (2 * eps)
                assert logits[k].grad[b, c].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_inner_loss_with_a_detached_is_a_weighted_cross_entropy():
    g, logits = hand_gater(), as_tensors(requires_grad=True)
    inner_loss(logits, torch.tensor(TARGET), COSTS, g, detach_a=True).backward()
    _, _, A = hand_objectives(LOGITS)
    for k in range(3):
        for b in range(2):
            p = softmax(LOGITS[k][b])
            # ∂/∂z of (1/N)(A+1)·(−log softmax(z)[y]) = (A+1)/N·(p − onehot(y))
            expected = [(A[b][k] + 1) / 2 * (p[c] - (1.0 if c == TARGET[b] else 0.0)) for c in range(2)]
            assert logits[k].grad[b].tolist() == pytest.approx(expected, rel=1e-10)
    full = as_tensors(requires_grad=True)
    inner_loss(full, torch.tensor(TARGET), COSTS, g).backward()
    assert not torch.allclose(full[0].grad, logits[0].grad)  # the ∂A/∂θ term is really there


def test_gater_rejects_bad_config_and_inputs():
    with pytest.raises(ConfigError):
        Gater(("confidence", "vibes"))
    with pytest.raises(ConfigError):
        Gater(())
    with pytest.raises(ConfigError):
        inner_loss(as_tensors(), torch.tensor(TARGET), [0.5, 1.0], hand_gater())
    with pytest.raises(ShapeError):
        exit_features(torch.zeros(2, 1))
    with pytest.raises(ShapeError):
        exit_probabilities(torch.zeros(3))


def test_gater_score_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    g = Gater(("confidence", "margin", "entropy"), hidden=8).eval()

    class Score(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g = g

        def forward(self, logits):
            return gater_score(logits, self.g)

    x = torch.randn(4, 5)
    path = tmp_path / "score.onnx"
    torch.onnx.export(Score().eval(), (x,), str(path), dynamo=True, external_data=False)
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert torch.allclose(torch.from_numpy(got), gater_score(x, g).detach(), atol=1e-6)
