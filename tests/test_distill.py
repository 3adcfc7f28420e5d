"""Self-distillation from the final exit and gradient equilibrium (issue 19): the loss hand-computed on 2 samples
and 3 classes; the gradients at every segment boundary against IMTA's formula; --freeze-backbone + --distill keeps
the user's model bit for bit; every method trains with both options; bad --distill is refused cleanly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import QUICK
from edgeexit.aep import aep_weights
from edgeexit.cli import app
from edgeexit.errors import ConfigError
from edgeexit.train.distill import distilled_exit_losses, equilibrium_forward, parse_distill
from edgeexit.train.losses import aep_loss, eenet_loss, exit_cross_entropy
from edgeexit.train.trainer import TrainConfig

runner = CliRunner()
LN2, LN3 = math.log(2), math.log(3)

# 2 samples, 3 classes, T = 2, alpha = 0.5. Exit 0 is the student, exit 1 (final) the teacher.
STUDENT = torch.tensor([[2 * LN2, 0.0, 0.0], [0.0, 0.0, 0.0]])
TEACHER = torch.tensor([[0.0, 0.0, 0.0], [2 * LN3, 0.0, 0.0]])
TARGET = torch.tensor([0, 2])


def hand_losses() -> tuple[list[float], list[float]]:
    """Per-sample losses of the student and the teacher, worked out by hand (T = 2, alpha = 0.5)."""
    # sample 0: student softmax(z) = [4/6, 1/6, 1/6] -> CE = ln 1.5; softmax(z/2) = [1/2, 1/4, 1/4],
    #   teacher softmax(0/2) = uniform -> KL = Σ 1/3·ln((1/3)/q) = -ln 3 + (5/3)·ln 2
    ce0, kl0 = math.log(1.5), -LN3 + 5 / 3 * LN2
    # sample 1: student uniform -> CE(y=2) = ln 3; teacher softmax(z/2) = [3/5, 1/5, 1/5] vs uniform ->
    #   KL = 0.6·ln(1.8) + 0.4·ln(0.6)
    ce1, kl1 = LN3, 0.6 * math.log(1.8) + 0.4 * math.log(0.6)
    student = [0.5 * ce0 + 0.5 * 4 * kl0, 0.5 * ce1 + 0.5 * 4 * kl1]  # (1-α)·CE + α·T²·KL
    # the final exit keeps its plain CE: sample 0 uniform -> ln 3; sample 1 softmax = [9/11, 1/11, 1/11], y=2 -> ln 11
    teacher = [LN3, math.log(11)]
    return student, teacher


def test_distillation_loss_is_the_hand_computed_value():
    student, teacher = hand_losses()
    assert student == pytest.approx([0.5 * 0.405465 + 2 * 0.056633, 0.5 * 1.098612 + 2 * 0.148342], abs=1e-5)
    logits = [STUDENT, TEACHER]
    got = distilled_exit_losses(logits, exit_cross_entropy(logits, TARGET), (2.0, 0.5))
    torch.testing.assert_close(got, torch.tensor([student, teacher]).T, atol=1e-6, rtol=0)
    # AEP: the same terms inside Σ α_i·L_i (batch means)
    w = aep_weights(2, "asc", "loss")
    want = w[0] * sum(student) / 2 + w[1] * sum(teacher) / 2
    assert float(aep_loss(logits, TARGET, "asc", distill=(2.0, 0.5))) == pytest.approx(want, abs=1e-6)
    # alpha = 0: exactly the plain loss
    assert float(aep_loss(logits, TARGET, "asc", distill=(2.0, 0.0))) == pytest.approx(
        float(aep_loss(logits, TARGET, "asc")), abs=1e-7)


def test_the_teacher_is_detached():
    student, teacher = STUDENT.clone().requires_grad_(), TEACHER.clone().requires_grad_()
    with_kd = distilled_exit_losses([student, teacher], exit_cross_entropy([student, teacher], TARGET), (2.0, 1.0))
    with_kd.sum().backward()
    grad_teacher = teacher.grad.clone()
    teacher.grad = None
    exit_cross_entropy([student, teacher], TARGET)[:, 1].sum().backward()
    assert torch.equal(grad_teacher, teacher.grad)  # the final exit learns from the labels only
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_eenet_distills_each_early_exits_classification_term():
    h = [torch.tensor([0.3, 0.8])]
    costs = [0.4, 1.0]
    logits = [STUDENT, TEACHER]
    plain = float(eenet_loss(logits, h, TARGET, costs))
    soft0 = 0.3 * torch.softmax(STUDENT, 1)[0, 0] + 0.7 * torch.softmax(TEACHER, 1)[0, 0]
    soft1 = 0.8 * torch.softmax(STUDENT, 1)[1, 2] + 0.2 * torch.softmax(TEACHER, 1)[1, 2]
    ce_mix = float(-(soft0.log() + soft1.log()) / 2)
    student, _ = hand_losses()
    kd = 4 * ((-LN3 + 5 / 3 * LN2) + 0.6 * math.log(1.8) + 0.4 * math.log(0.6)) / 2
    got = float(eenet_loss(logits, h, TARGET, costs, distill=(2.0, 0.5)))
    assert got == pytest.approx(plain - ce_mix + 0.5 * ce_mix + 0.5 * kd, abs=1e-6)


def _tiny_net(K: int = 3):
    torch.manual_seed(0)
    segments = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(K))
    heads = nn.ModuleList(nn.Linear(4, 3) for _ in range(K))
    return segments, heads


def _losses(logits, y):
    # known, distinct losses per exit so that each exit's share is visible
    return [(k + 1.0) * nn.functional.cross_entropy(out, y) for k, out in enumerate(logits)]


def test_gradient_equilibrium_scales_the_segment_gradients_as_the_formula_says():
    K = 3
    segments, heads = _tiny_net(K)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])

    # reference: the plain network, every boundary tensor kept
    feats, h = [], x
    for seg in segments:
        h = seg(h)
        feats.append(h)
    logits = [head(f) for head, f in zip(heads, feats)]
    losses = _losses(logits, y)
    # G_{K-1} = ∂ℓ_{K-1}/∂x_{K-1};  G_k = (∂ℓ_k/∂x_k + (K-k-1)·J_{k+1}ᵀ G_{k+1}) / (K-k)
    want = [None] * K
    want[K - 1] = torch.autograd.grad(losses[K - 1], feats[K - 1], retain_graph=True)[0]
    for k in range(K - 2, -1, -1):
        direct = torch.autograd.grad(losses[k], feats[k], retain_graph=True)[0]
        back = torch.autograd.grad(feats[k + 1], feats[k], grad_outputs=want[k + 1], retain_graph=True)[0]
        want[k] = (direct + (K - k - 1) * back) / (K - k)
    plain_total = [torch.autograd.grad(sum(losses), f, retain_graph=True)[0] for f in feats]

    kept = []

    def keep(module, inputs, out):  # returns None: the output stays as it is
        out.retain_grad()
        kept.append(out)

    hooks = [seg.register_forward_hook(keep) for seg in segments]
    got_logits, confs = equilibrium_forward(segments, heads, x)
    for hk in hooks:
        hk.remove()
    assert confs is None
    for a, b in zip(got_logits, logits):
        assert torch.equal(a, b)  # the forward pass is unchanged
    sum(_losses(got_logits, y)).backward()
    for k in range(K):
        torch.testing.assert_close(kept[k].grad, want[k], atol=1e-6, rtol=1e-5)
    # and it is not the plain gradient (the test can fail): the first segment's share differs
    assert not torch.allclose(kept[0].grad, plain_total[0], atol=1e-4)
    # the last segment only feeds the final head: unscaled there
    torch.testing.assert_close(kept[K - 1].grad, plain_total[K - 1], atol=1e-6, rtol=1e-5)


def test_gradient_equilibrium_two_exits_by_hand():
    """K = 2, identity segment 1 and linear heads: G_0 = (g_head0 + g_from_exit1) / 2 exactly."""
    segments = nn.ModuleList([nn.Identity(), nn.Identity()])
    w0, w1 = torch.tensor([[2.0]]), torch.tensor([[3.0]])
    heads = nn.ModuleList([nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)])
    with torch.no_grad():
        heads[0].weight.copy_(w0)
        heads[1].weight.copy_(w1)
    x = torch.tensor([[1.0]], requires_grad=True)
    out, _ = equilibrium_forward(segments, heads, x)
    (out[0].sum() + out[1].sum()).backward()
    assert float(x.grad) == pytest.approx((2.0 + 3.0) / 2)  # plain would be 5
    assert float(heads[0].weight.grad) == pytest.approx(1.0)  # heads' own parameters: unscaled
    assert float(heads[1].weight.grad) == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["3", "3,0.9,1", "x,0.5", "0,0.5", "3,1.5", "inf,0.5"])
def test_bad_distill_is_refused(text):
    with pytest.raises(ConfigError):
        parse_distill(text)


def test_bad_distill_on_the_command_line_exits_cleanly(tmp_path):
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *QUICK, "--epochs", "1",
                              "--distill", "3,2"])
    assert res.exit_code != 0 and "--distill" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_config_round_trips_a_checkpoints_list():
    assert TrainConfig(distill=[3, 0.9]).distill == (3.0, 0.9)


@pytest.mark.parametrize("method", ["aep", "eenet", "budget"])
def test_every_method_trains_with_both_options(tmp_path, method):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--run-dir", str(run), *QUICK, "--method", method, "--epochs", "1",
                              "--max-steps", "2", "--batch-size", "32", "--device", "cpu", "--gater-period", "1",
                              "--distill", "3,0.9", "--gradient-equilibrium"])
    assert res.exit_code == 0, res.output
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert tuple(ckpt["train_config"]["distill"]) == (3.0, 0.9) and ckpt["train_config"]["gradient_equilibrium"]


def test_freeze_backbone_with_distill_keeps_the_users_model_bit_for_bit(tmp_path):
    from test_own_model import AGAIN, DATA, USER, trained_user_model, user_weights

    from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint

    model, path = trained_user_model(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--run-dir", str(run), *USER, "--weights", path, "--freeze-backbone", *DATA,
                              "--epochs", "1", "--max-steps", "3", "--lr", "1e-2", "--distill", "3,0.9",
                              "--gradient-equilibrium"])
    assert res.exit_code == 0, res.output
    net, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"), model=AGAIN)
    inside = user_weights(net)
    assert inside.keys() == before.keys() and all(torch.equal(inside[k], v) for k, v in before.items())
    x = torch.randn(8, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(net.eval()(x)[-1], model(x))


def test_resume_keeps_the_distill_settings_and_refuses_others(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), *QUICK, "--max-steps", "1", "--batch-size", "32", "--device", "cpu",
            "--distill", "3,0.9", "--gradient-equilibrium", "--schedule", "constant"]
    assert runner.invoke(app, [*args, "--epochs", "1"]).exit_code == 0
    res = runner.invoke(app, [*args, "--epochs", "2", "--resume"])
    assert res.exit_code == 0, res.output
    before = (run / "checkpoint.pt").read_bytes()
    changed = [a if a != "3,0.9" else "2,0.5" for a in args]
    res = runner.invoke(app, [*changed, "--epochs", "3", "--resume"])
    assert res.exit_code != 0 and "--distill" in res.output and "Traceback" not in res.output
    assert (run / "checkpoint.pt").read_bytes() == before
