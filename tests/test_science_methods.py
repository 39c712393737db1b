"""Training methods against references written from SPEC.md's formulas, not from the code.

The model is a 2-class linear map: its input gradient of the cross-entropy has a constant sign per
pixel (grad = p_other * (w_other - w_y)), so a PGD run of enough steps ends at a closed form,
clip(x + eps * sign(w_other - w_y)), whatever its random start; the saliency |w_y| (or w_y, signed)
is input-independent with distinct values, so the masked pixels are known; a fixed mask fill of
[0.5, 0.5 + 1e-9] makes the masked values 0.5. Every loss is then recomputed here from the formula,
with KL(p || q) = sum_c p_c (log p_c - log q_c), averaged over the batch, p the clean prediction.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.train.methods import METHODS, MethodConfig, StepContext

H = W = 4


def linear_model() -> nn.Sequential:
    torch.manual_seed(0)
    lin = nn.Linear(H * W, 2)
    with torch.no_grad():  # distinct |w| and mixed signs: abs and signed rankings differ
        w0 = torch.linspace(-1.0, 1.2, H * W)[torch.randperm(H * W)]
        w1 = torch.linspace(-0.9, 1.3, H * W)[torch.randperm(H * W)]
        lin.weight.copy_(torch.stack([w0, w1]))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def data(n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, H, W, generator=g) * 0.6 + 0.2, torch.randint(0, 2, (n,), generator=g)


def kl_ref(p_logits, q_logits):
    """KL(p || q) from the definition."""
    lp, lq = p_logits.log_softmax(1), q_logits.log_softmax(1)
    return (lp.exp() * (lp - lq)).sum(1).mean()


def weights(model):
    return model[1].weight.detach()


def saliency_ref(model, x, y, mode="abs", target="true"):
    """d logit_c / d x for c the label (or the prediction), per image: the row w_c."""
    c = model(x).argmax(1) if target == "pred" else y
    s = weights(model)[c].reshape(-1, H, W)
    return s.abs() if mode == "abs" else s


def mask_ref(x, s, k):
    """The floor(k * H * W) lowest-saliency pixels set to 0.5."""
    n = int(k * H * W + 1e-9)
    out = x.clone().reshape(len(x), -1)
    idx = s.reshape(len(x), -1).argsort(1)[:, :n]
    out.scatter_(1, idx, 0.5)
    return out.reshape(x.shape)


def attack_ref(model, x, y, eps, support=None):
    """The end point of a saturating PGD: every pixel (of the support) at its ball edge that raises the loss."""
    w = weights(model)
    direction = torch.sign(w[1 - y] - w[y]).reshape(-1, 1, H, W)
    if support is not None:
        direction = direction * support
    return (x + eps * direction).clamp(0, 1)


def cfg(**kw) -> MethodConfig:
    base = dict(mask_fill="fixed", mask_low=0.5, mask_high=0.5 + 1e-9, train_steps=6, lam=0.37)
    return MethodConfig(**{**base, **kw}).validate()


def run(name, model, x, y, c, state=None, epoch=1, wrap=False):
    """One step; `wrap`: through a DDP-like wrapper, so nothing is shared (the other code path)."""
    ctx = StepContext(idx=torch.arange(len(x)), epoch=epoch, step=0, state=state or {}, module=model)
    return METHODS.get(name).fn(Wrapper(model) if wrap else model, x, y, c, ctx)


def ce(model, x, y):
    return F.cross_entropy(model(x), y)


@pytest.mark.parametrize("wrap", [False, True], ids=["shared", "unshared"])
@pytest.mark.parametrize("mode,target", [("abs", "true"), ("signed", "true"), ("abs", "pred")])
def test_sgt_is_the_spec_formula(mode, target, wrap):
    model, (x, y) = linear_model(), data()
    y[:4] = 1 - model(x[:4]).argmax(1)  # half the labels disagree with the prediction: target matters
    c = cfg(saliency=mode, saliency_target=target, k=0.25)
    loss, parts = run("sgt", model, x, y, c, wrap=wrap)
    xm = mask_ref(x, saliency_ref(model, x, y, mode, target), 0.25)
    kl = kl_ref(model(x), model(xm))
    assert kl > 1e-3
    assert torch.allclose(parts["kl"], kl, atol=1e-6) and torch.allclose(parts["ce"], ce(model, x, y))
    assert torch.allclose(loss, ce(model, x, y) + 0.37 * kl, atol=1e-6)


def test_saliency_options_change_which_pixels_are_masked():
    """The three references differ on this batch, so the parametrised test above tells them apart."""
    model, (x, y) = linear_model(), data()
    y[:4] = 1 - model(x[:4]).argmax(1)
    masks = [mask_ref(x, saliency_ref(model, x, y, m, t), 0.25) for m, t in
             [("abs", "true"), ("signed", "true"), ("abs", "pred")]]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_sga_masks_then_attacks():
    model, (x, y) = linear_model(), data()
    loss, parts = run("sga", model, x, y, cfg(train_eps=0.1, k=0.5))
    x_ma = attack_ref(model, mask_ref(x, saliency_ref(model, x, y), 0.5), y, 0.1)
    kl = kl_ref(model(x), model(x_ma))
    assert torch.allclose(parts["kl"], kl, atol=1e-6)
    assert torch.allclose(loss, ce(model, x, y) + 0.37 * kl, atol=1e-6)


def test_asgt_attacks_then_masks():
    model, (x, y) = linear_model(), data()
    loss, parts = run("asgt", model, x, y, cfg(train_eps=0.1, k=0.25))
    x_adv = attack_ref(model, x, y, 0.1)
    x_am = mask_ref(x_adv, saliency_ref(model, x_adv, y), 0.25)
    kl = kl_ref(model(x), model(x_am))
    assert torch.allclose(parts["ce_adv"], ce(model, x_adv, y), atol=1e-6)
    assert torch.allclose(parts["kl"], kl, atol=1e-6)
    assert torch.allclose(loss, ce(model, x, y) + ce(model, x_adv, y) + 0.37 * kl, atol=1e-6)


@pytest.mark.parametrize("wrap", [False, True], ids=["shared", "unshared"])
def test_scaat_kl_direction_and_lambda_with_a_real_attack(wrap):
    """PGD runs for real (budget eps_irr = 1 on the q_i lowest-saliency pixels): the KL term is large."""
    model, (x, y) = linear_model(), data()
    q = torch.tensor([0.25, 0.5, 0.75, 0.25, 0.5, 0.75, 0.25, 0.5])
    for lam in (0.37, 2.0):
        state = {"q": q.clone()}
        loss, parts = run("scaat", model, x, y, cfg(lam=lam, eps_irr=1.0), state, epoch=0, wrap=wrap)
        s = saliency_ref(model, x, y).reshape(len(x), -1)
        n = (q * H * W).long()
        support = (s.argsort(1).argsort(1) < n[:, None]).reshape(-1, 1, H, W).float()
        x_adv = attack_ref(model, x, y, 1.0, support)
        kl = kl_ref(model(x), model(x_adv))
        assert kl > 0.05 and not torch.allclose(kl, kl_ref(model(x_adv), model(x)), atol=1e-3)
        assert torch.allclose(parts["kl"], kl, atol=1e-5)
        assert torch.allclose(loss, ce(model, x, y) + lam * kl, atol=1e-5)
        assert torch.equal(state["q"], q)  # epoch 0 is the warm-up


@pytest.mark.parametrize("name", ["at-pgd", "at-fgsm"])
@pytest.mark.parametrize("clean_loss", [False, True])
def test_adversarial_training_loss_and_clean_loss_option(name, clean_loss):
    model, (x, y) = linear_model(), data()
    c = cfg(train_eps=0.1, clean_loss=clean_loss, random_start=False, fgsm_alpha=0.1)
    loss, parts = run(name, model, x, y, c)
    x_adv = attack_ref(model, x, y, 0.1)
    expect = ce(model, x_adv, y) + (ce(model, x, y) if clean_loss else 0)
    assert torch.allclose(loss, expect, atol=1e-6)
    assert ("ce" in parts) == clean_loss


def test_train_alpha_sets_the_pgd_step():
    """One PGD step of alpha from a random start in the eps-ball: with alpha = eps / 100 the adversarial
    loss stays near the random start's; with alpha = 2 eps every pixel reaches its loss-raising edge."""
    model, (x, y) = linear_model(), data(64)
    torch.manual_seed(0)
    small, _ = run("at-pgd", model, x, y, cfg(train_eps=0.1, train_steps=1, train_alpha=0.001))
    big, _ = run("at-pgd", model, x, y, cfg(train_eps=0.1, train_steps=1, train_alpha=0.2))
    assert torch.allclose(big, ce(model, attack_ref(model, x, y, 0.1), y), atol=1e-6)
    assert small < big - 0.02


def test_fgsm_alpha_sets_the_fast_at_step():
    """AT-FGSM with a random start: x0 = x + U(-eps, eps), one step of fgsm_alpha, projection. With
    fgsm_alpha = 2 eps the step saturates at the edge (closed form); with a tiny one it does not."""
    model, (x, y) = linear_model(), data(64)
    torch.manual_seed(0)
    big, _ = run("at-fgsm", model, x, y, cfg(train_eps=0.1, fgsm_alpha=0.2))
    small, _ = run("at-fgsm", model, x, y, cfg(train_eps=0.1, fgsm_alpha=0.001))
    assert torch.allclose(big, ce(model, attack_ref(model, x, y, 0.1), y), atol=1e-6)
    assert small < big - 0.02


class TrainScale(nn.Module):
    """Mode-dependent but deterministic: x2 in train mode, x1 in eval mode (stands for dropout)."""

    def forward(self, x):
        return x * 2 if self.training else x


def two_mode_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), TrainScale(), nn.Flatten(), nn.Linear(3 * 4, 2)).train()


from test_methods import Wrapper  # noqa: E402  (stands for DDP: `model is not ctx.module`)


@pytest.mark.parametrize("name", ["sgt", "sga", "asgt", "scaat"])
def test_shared_forward_is_exact_with_a_mode_dependent_layer(name):
    """Saliency in eval mode, the loss in train mode: the path that shares the layers before the
    mode-dependent one gives exactly the unshared path's loss and gradients, and its clean CE is the
    train-mode one (an eval-mode clean forward would give another value)."""
    model, (x, y) = two_mode_model(), data()
    c = cfg(train_eps=0.1, train_steps=2)
    results = []
    for net in (model, Wrapper(model)):
        model.zero_grad()
        torch.manual_seed(3)
        ctx = StepContext(idx=torch.arange(len(x)), epoch=0, step=0, state={"q": torch.full((8,), 0.3)},
                          module=model)
        loss, parts = METHODS.get(name).fn(net, x, y, c, ctx)
        loss.backward()
        results.append((loss.detach(), parts, [p.grad.clone() for p in model.parameters()]))
        assert model.training and model[2].training
    (l1, p1, g1), (l2, p2, g2) = results
    assert torch.allclose(l1, l2, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
    train_ce = F.cross_entropy(model(x), y)
    with torch.no_grad():
        eval_ce = F.cross_entropy(model.eval()(x), y)
    model.train()
    assert not torch.allclose(train_ce, eval_ce, atol=1e-3)
    assert torch.allclose(p1["ce"], train_ce, atol=1e-6) and torch.allclose(p2["ce"], train_ce, atol=1e-6)


# --- the shared pieces: which forwards run where --------------------------------------------------------

from sgtlab.train.methods._shared import forward_many, kl_term, saliency_mask_and_clean  # noqa: E402


class Counting(nn.Module):
    """Records the batch size of every forward through it (a wrapper when `inner` is given)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(H * W, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()


def test_kl_term_is_kl_p_q_on_logits_and_warns_nothing():
    """KL(p || q) from its definition, on logits of several classes, with no implicit-dim warning."""
    import warnings

    torch.manual_seed(0)
    p, q = torch.randn(5, 4) * 2, torch.randn(5, 4) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kl = kl_term(p, q)
    assert torch.allclose(kl, kl_ref(p, q), atol=1e-6)


def test_forward_many_one_input_is_one_plain_forward():
    model, (x, _) = linear_model(), data()
    counted = Counting(model)
    (out,) = forward_many(counted, model, x)
    assert counted.calls == [len(x)] and torch.equal(out, model(x))


def test_forward_many_separate_on_cpu_concatenated_under_a_wrapper():
    """Documented dispatch: the model itself on a CPU runs one forward per input; under a (DDP-like)
    wrapper the inputs go through it as one concatenated batch (one forward per backward)."""
    model, (x, _) = linear_model(), data()
    xm = x.flip(0)
    counted = Counting(model)
    a, b = forward_many(counted, counted, x, xm)
    assert counted.calls == [8, 8]
    assert torch.allclose(a, model(x)) and torch.allclose(b, model(xm))
    wrapper = Counting(model)
    a, b = forward_many(wrapper, model, x, xm)
    assert wrapper.calls == [16]
    assert torch.allclose(a, model(x), atol=1e-6) and torch.allclose(b, model(xm), atol=1e-6)


@pytest.mark.parametrize("wrap", [False, True], ids=["shared", "unshared"])
def test_forward_many_normalises_each_input_by_its_own_batch_statistics(wrap):
    """With batch-norm the inputs are never concatenated: train-mode batch statistics of each input
    alone (a concatenated batch would mix the two inputs' statistics)."""
    model, (x, _) = bn_model(), data()
    xm = x * 0.3 + 0.5
    net = Wrapper(model) if wrap else model
    a, b = forward_many(net, model, x, xm)
    assert torch.allclose(a, model(x), atol=1e-6) and torch.allclose(b, model(xm), atol=1e-6)
    mixed = model(torch.cat([x, xm]))[:8]
    assert not torch.allclose(a, mixed, atol=1e-3)


def test_saliency_mask_and_clean_shares_only_without_a_wrapper():
    """The shared path gives the train-mode clean logits with the mask; under a wrapper it gives
    none, so the training forward of x goes through the wrapper (DDP must see it)."""
    model, (x, y) = linear_model(), data()
    c = cfg(k=0.25)
    xm, clean = saliency_mask_and_clean(model, model, x, y, c, 0.25)
    assert clean is not None and torch.allclose(clean, model(x), atol=1e-6)
    assert torch.allclose(xm, mask_ref(x, saliency_ref(model, x, y), 0.25))
    xm2, clean2 = saliency_mask_and_clean(Wrapper(model), model, x, y, c, 0.25)
    assert clean2 is None and torch.allclose(xm2, xm)


@pytest.mark.parametrize("name,rows", [("sgt", 16), ("sga", 16), ("asgt", 24), ("scaat", 16)])
def test_every_training_forward_goes_through_the_wrapper(name, rows):
    """Under DDP the wrapper must see every forward whose logits enter the loss (clean, masked,
    adversarial): 2 or 3 batches' worth of rows; attacks and saliency use the bare module."""
    model, (x, y) = linear_model(), data()
    wrapper = Counting(model)
    ctx = StepContext(idx=torch.arange(8), epoch=1, step=0, state={"q": torch.full((8,), 0.25)}, module=model)
    METHODS.get(name).fn(wrapper, x, y, cfg(train_eps=0.1, train_steps=1), ctx)
    assert sum(wrapper.calls) == rows


@pytest.mark.parametrize("wrap", [False, True], ids=["shared", "unshared"])
@pytest.mark.parametrize("mode,target", [("abs", "true"), ("signed", "true"), ("abs", "pred")])
def test_scaat_one_pgd_step_from_a_random_start_on_the_support(mode, target, wrap):
    """One PGD step, written out: x0 = clip(x + U(-eps_irr, eps_irr) * support) (the start drawn as
    torchattacks draws it, first on the global RNG), x1 = x0 + train_alpha * sign(grad) on the
    support, projected onto the eps_irr ball and [0, 1]; the support is the q_i lowest-saliency
    pixels with the chosen saliency mode and target."""
    model, (x, y) = linear_model(), data()
    y[:4] = 1 - model(x[:4]).argmax(1)
    q = torch.tensor([0.25, 0.5, 0.75, 0.25, 0.5, 0.75, 0.25, 0.5])
    c = cfg(eps_irr=0.6, train_steps=1, train_alpha=0.05, saliency=mode, saliency_target=target)
    torch.manual_seed(11)
    loss, parts = run("scaat", model, x, y, c, {"q": q.clone()}, epoch=0, wrap=wrap)
    s = saliency_ref(model, x, y, mode, target).reshape(len(x), -1)
    support = (s.argsort(1).argsort(1) < (q * H * W).long()[:, None]).reshape(-1, 1, H, W).float()
    torch.manual_seed(11)
    x0 = (x + torch.empty_like(x).uniform_(-0.6, 0.6) * support).clamp(0, 1)
    w = weights(model)
    step = 0.05 * torch.sign(w[1 - y] - w[y]).reshape(-1, 1, H, W) * support
    x1 = torch.min(torch.max(x0 + step, x - 0.6), x + 0.6).clamp(0, 1)
    kl = kl_ref(model(x), model(x1))
    assert kl > 1e-3 and not torch.allclose(kl, kl_ref(model(x), model(attack_ref(model, x, y, 0.6, support))))
    assert torch.allclose(parts["kl"], kl, atol=1e-6)
    assert torch.allclose(loss, ce(model, x, y) + 0.37 * kl, atol=1e-6)


@pytest.mark.parametrize("name", ["sgt", "sga", "asgt", "scaat"])
def test_the_model_itself_shares_one_forward_of_the_saliency_input(name, monkeypatch):
    """Without a wrapper the saliency pass and the training forward of its input share the
    mode-free prefix (here the whole linear model): the linear layer sees exactly one batch fewer
    than on the unshared (wrapped) path, where that input runs twice."""
    rows = []
    plain_forward = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, t: rows.append(t.shape[0]) or plain_forward(self, t))
    model, (x, y) = linear_model(), data()
    counts = []
    for wrap in (False, True):
        rows.clear()
        torch.manual_seed(0)
        run(name, model, x, y, cfg(train_eps=0.1, train_steps=2), {"q": torch.full((8,), 0.25)}, wrap=wrap)
        counts.append(sum(rows))
    assert counts[1] - counts[0] == len(x)


@pytest.mark.parametrize("name", ["sga", "at-pgd", "asgt"])
def test_training_pgd_starts_randomly_and_takes_train_steps_of_train_alpha(name):
    """One PGD step of a tiny train_alpha: the result is (nearly) the random start in the eps-ball,
    neither the attacked input itself (no random start) nor the saturated end point (which the
    default alpha, 2.5 eps for one step, reaches). On a linear model the CE and the KL are convex in
    the input, so a random start raises them on average over the 32 samples (Jensen). One step of
    eps / 10 stays well short of the end point too (the default 10 steps would reach it)."""
    model, (x, y) = linear_model(), data(32)

    def attacked_term(alpha):
        torch.manual_seed(0)
        loss, parts = run(name, model, x, y, cfg(train_eps=0.3, train_steps=1, train_alpha=alpha, k=0.5))
        return parts["kl"] if name == "sga" else parts["ce_adv"]

    if name == "sga":  # the masked input is attacked; the term is KL(f(x) || f(x~'))
        x_in = mask_ref(x, saliency_ref(model, x, y), 0.5)
        def value(t):
            return kl_ref(model(x), model(t))
    else:  # the clean input is attacked; the term is CE(f(x'), y)
        x_in = x
        def value(t):
            return ce(model, t, y)
    unmoved, saturated = value(x_in), value(attack_ref(model, x_in, y, 0.3))
    mid = (unmoved + saturated) / 2
    assert unmoved + 0.01 < attacked_term(1e-4) < mid
    assert attacked_term(0.03) < mid


def test_st_is_the_cross_entropy_logged_as_ce():
    """ST: CE(f(x), y), logged under the name every method uses for the clean cross-entropy (the
    names of the logged parts are the metrics' names in metrics.jsonl)."""
    model, (x, y) = linear_model(), data()
    loss, parts = run("st", model, x, y, cfg())
    p = model(x).softmax(1)
    expect = -p[torch.arange(len(y)), y].log().mean()
    assert torch.allclose(loss, expect, atol=1e-6)
    assert set(parts) == {"ce"} and torch.allclose(parts["ce"], expect, atol=1e-6)
    for name, keys in [("sgt", {"ce", "kl"}), ("sga", {"ce", "kl"}), ("asgt", {"ce", "ce_adv", "kl"}),
                       ("scaat", {"ce", "kl", "q"})]:
        _, parts = run(name, model, x, y, cfg(train_steps=1), {"q": torch.full((8,), 0.25)})
        assert set(parts) == keys and torch.allclose(parts["ce"], expect, atol=1e-6), name
    for name in ("at-fgsm", "at-pgd"):  # CE(f(x')) as ce_adv, and the clean CE as ce with --clean-loss
        for clean_loss in (False, True):
            loss, parts = run(name, model, x, y, cfg(train_steps=1, clean_loss=clean_loss))
            assert set(parts) == ({"ce_adv", "ce"} if clean_loss else {"ce_adv"}), name
            assert torch.allclose(loss, parts["ce_adv"] + parts.get("ce", 0), atol=1e-6)
            assert not clean_loss or torch.allclose(parts["ce"], expect, atol=1e-6)
