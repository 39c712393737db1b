"""The training attacks' eps warm-up (`eps_warmup`): the budget and step size at step t follow the
linear ramp (t + 1) / W over the first W = eps_warmup x total_steps steps, every adversarial method
uses it, the loop passes the global step and the run's length (so a resumed run ramps as an
uninterrupted one), warm-up 0 trains exactly as before the option, and the option is validated, on
the command line and part of a run's identity."""
from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.train import TrainConfig, fit, register_method
from sgtlab.train.methods import METHODS, MethodConfig, StepContext
from sgtlab.train.methods._shared import current_eps, fgsm_budget, pgd_budget, warmup_factor


def ctx(step, total, model=None, state=None, n=6):
    return StepContext(idx=torch.arange(n), epoch=0, step=step, state=state or {}, module=model,
                       total_steps=total)


def test_the_factor_is_the_linear_ramp_then_exactly_one():
    cfg = MethodConfig(eps_warmup=0.5)  # 10 steps: W = 5
    assert [warmup_factor(cfg, ctx(t, 10)) for t in range(10)] == pytest.approx([0.2, 0.4, 0.6, 0.8] + [1] * 6)
    assert all(warmup_factor(cfg, ctx(t, 10)) == 1.0 for t in range(4, 10))
    assert warmup_factor(MethodConfig(eps_warmup=0.0), ctx(0, 10)) == 1.0  # off
    assert warmup_factor(cfg, ctx(0, 0)) == 1.0  # run length unknown: the full budget
    assert warmup_factor(MethodConfig(eps_warmup=1.0), ctx(0, 4)) == 0.25  # the first step is never eps 0
    assert warmup_factor(MethodConfig(eps_warmup=0.3), ctx(0, 3)) == 1.0  # W = 0.9 < 1 step
    cfg = MethodConfig(eps_warmup=0.3, train_eps=0.3)  # quick's AT: 50 steps, W = 15
    assert current_eps(cfg, ctx(2, 50)) == pytest.approx(0.3 * 3 / 15) and current_eps(cfg, ctx(14, 50)) == 0.3
    assert current_eps(cfg, ctx(2, 50), eps=1.0) == pytest.approx(3 / 15)


def test_step_sizes_scale_with_the_budget_and_the_default_equals_the_written_out_one():
    t, total = 1, 10  # W = 5: factor 0.4
    cfg = MethodConfig(eps_warmup=0.5, train_eps=0.3, train_steps=3)
    eps, alpha = pgd_budget(cfg, ctx(t, total))
    assert eps == pytest.approx(0.12) and alpha == pytest.approx(2.5 * 0.12 / 3)
    # the runner writes PGD's default alpha out (resolve_train): the same steps as alpha None
    written = MethodConfig(eps_warmup=0.5, train_eps=0.3, train_steps=3, train_alpha=2.5 * 0.3 / 3)
    assert pgd_budget(written, ctx(t, total)) == (eps, alpha)
    # an explicit alpha is the step at the full budget: it scales with eps, and is kept after the ramp
    explicit = MethodConfig(eps_warmup=0.5, train_eps=0.3, train_alpha=0.05)
    assert pgd_budget(explicit, ctx(t, total)) == pytest.approx((0.12, 0.02))
    assert pgd_budget(explicit, ctx(7, total)) == (0.3, 0.05) and pgd_budget(cfg, ctx(7, total)) == (0.3, None)
    assert pgd_budget(cfg, ctx(t, total), eps=1.0) == pytest.approx((0.4, 2.5 * 0.4 / 3))  # SCAAT's eps_irr
    assert fgsm_budget(MethodConfig(eps_warmup=0.5, train_eps=0.2), ctx(t, total)) == pytest.approx((0.08, 0.1))
    assert fgsm_budget(MethodConfig(eps_warmup=0.5, train_eps=0.2, random_start=False), ctx(t, total)) \
        == pytest.approx((0.08, 0.08))
    assert fgsm_budget(MethodConfig(eps_warmup=0.5, fgsm_alpha=0.5), ctx(t, total)) == pytest.approx((0.12, 0.2))


# (method, its module, the attack function it calls, the budget option)
ADVERSARIAL = [("at-fgsm", "adversarial", "fgsm", "train_eps"), ("at-pgd", "adversarial", "pgd", "train_eps"),
               ("sga", "sga", "pgd", "train_eps"), ("asgt", "asgt", "pgd", "train_eps"),
               ("scaat", "scaat", "pgd", "eps_irr")]


@pytest.mark.parametrize("name,module,attack,budget", ADVERSARIAL)
def test_every_adversarial_method_attacks_with_the_ramped_budget(monkeypatch, name, module, attack, budget):
    mod = importlib.import_module(f"sgtlab.train.methods.{module}")
    calls = []

    def spy(model, x, y, eps, **kw):
        calls.append((eps, kw.get("alpha")))
        return x.clone()

    monkeypatch.setattr(mod, attack, spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 5
    cfg = MethodConfig(eps_warmup=0.4, train_eps=0.25, eps_irr=0.8, train_steps=2, train_alpha=0.3)
    state = {"q": torch.full((6,), 0.2)}
    full = getattr(cfg, budget)
    for t in range(6):  # 10 steps, W = 4
        METHODS.get(name).fn(model, x, y, cfg, ctx(t, 10, model, state))
    f = [min(1.0, (t + 1) / 4) for t in range(6)]
    assert [c[0] for c in calls] == pytest.approx([full * v for v in f])
    alpha = 0.3 if attack == "pgd" else 1.25 * 0.25  # AT-FGSM: its own step (fgsm_alpha, default 1.25 eps)
    assert [c[1] for c in calls] == pytest.approx([alpha * v for v in f])
    assert calls[-1] == (full, 0.3 if attack == "pgd" else 1.25 * 0.25)  # after the ramp: the options as given


SEEN: list[tuple[int, int, int, float]] = []
CRASH = [-10**9]


@register_method("test-eps-record")
def _record(model, x, y, cfg, ctx):
    """Test only: records (epoch, step, total_steps, eps) and trains as ST."""
    if ctx.step == CRASH[0]:
        raise KeyboardInterrupt  # an interrupted run
    SEEN.append((ctx.epoch, ctx.step, ctx.total_steps, current_eps(cfg, ctx)))
    loss = nn.functional.cross_entropy(model(x), y)
    return loss, {"ce": loss.detach()}


def _cfg(method="test-eps-record", **mc):
    return TrainConfig(dataset="mnist5k", method=method, epochs=3, batch_size=16, lr=0.05, seed=0, device="cpu",
                       train_subset=64, eval_subset=32, method_cfg=MethodConfig(train_eps=0.3, train_steps=2, **mc))


def test_the_loop_gives_the_global_step_and_run_length_and_a_resumed_run_ramps_the_same(tmp_path):
    SEEN.clear()
    fit(_cfg(eps_warmup=0.5), tmp_path / "full", progress=False)  # 4 steps an epoch, 12 in all: W = 6
    full = list(SEEN)
    assert [s[:3] for s in full] == [(t // 4, t, 12) for t in range(12)]
    assert [s[3] for s in full] == pytest.approx([0.3 * min(1, (t + 1) / 6) for t in range(12)])
    SEEN.clear()
    CRASH[0] = 6  # in the second epoch, after epoch 1's checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(_cfg(eps_warmup=0.5), tmp_path / "cut", progress=False)
    finally:
        CRASH[0] = -10**9
    SEEN.clear()
    fit(_cfg(eps_warmup=0.5), tmp_path / "cut", resume=True, progress=False)
    assert SEEN == full[4:]  # epoch 2 starts over at global step 4, with the same budgets


def _pgd_calls(monkeypatch, tmp_path, **mc):
    adv = importlib.import_module("sgtlab.train.methods.adversarial")
    real, calls = adv.pgd, []

    def spy(model, x, y, eps, **kw):
        calls.append((eps, kw["alpha"]))
        return real(model, x, y, eps, **kw)

    monkeypatch.setattr(adv, "pgd", spy)
    fit(_cfg("at-pgd", **mc), tmp_path, progress=False)
    from sgtlab.train.checkpoint import read_checkpoint

    tensors, _ = read_checkpoint(tmp_path)
    return calls, {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_warmup_zero_trains_as_before_and_a_warmup_changes_training(monkeypatch, tmp_path):
    """Warm-up 0: every step's attack gets the options themselves (as before the option existed), so
    training is the same bit for bit; a warm-up attacks with less at first and ends elsewhere."""
    off, w_off = _pgd_calls(monkeypatch, tmp_path / "off", eps_warmup=0.0)
    # alpha: PGD's default step size 2.5 eps / steps (2 steps), written out by the resolver
    assert len(off) == 12 and all(eps == 0.3 and alpha == pytest.approx(2.5 * 0.3 / 2) for eps, alpha in off)
    again, w_again = _pgd_calls(monkeypatch, tmp_path / "again", eps_warmup=0.0)
    assert all(torch.equal(w_off[k], w_again[k]) for k in w_off)
    on, w_on = _pgd_calls(monkeypatch, tmp_path / "on", eps_warmup=0.5)
    assert [e for e, _ in on] == pytest.approx([0.3 * min(1, (t + 1) / 6) for t in range(12)])
    assert not all(torch.equal(w_off[k], w_on[k]) for k in w_off)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_the_option_is_validated_in_one_line(bad):
    with pytest.raises(SgtlabError, match=r"eps-warmup must be in \[0, 1\]|must be finite|finite") as e:
        MethodConfig(eps_warmup=bad).validate()
    assert "\n" not in str(e.value)
    MethodConfig(eps_warmup=0.0).validate()
    MethodConfig(eps_warmup=1.0).validate()


def test_the_command_line_option_and_its_default():
    from sgtlab.cli import build_parser

    assert MethodConfig().eps_warmup == 0.3
    args = build_parser().parse_args(["train", "--out", "r", "--method", "at-pgd", "--eps-warmup", "0.5"])
    assert args.eps_warmup == 0.5
    assert build_parser().parse_args(["train", "--out", "r"]).eps_warmup is None  # left out: the default, 0.3


def test_the_option_is_part_of_the_run_identity():
    from sgtlab.experiments.presets import apply_overrides, expand, load_preset

    def spec(*over):
        return {s.name: s for s in expand(apply_overrides(load_preset("quick"), ["seeds=[0]", *over]))}

    base, other = spec(), spec("methods.3.eps_warmup=0.5")
    assert base["at-pgd-seed0"].train["method_cfg"]["eps_warmup"] == 0.3
    assert other["at-pgd-seed0"].config_hash() != base["at-pgd-seed0"].config_hash()
    assert other["st-seed0"].config_hash() == base["st-seed0"].config_hash()
    # warm-up 0 is how runs made before the option trained: their identity (and hash) is kept
    off = spec("methods.3.eps_warmup=0")["at-pgd-seed0"]
    assert "eps_warmup" not in off.identity()["train"]["method_cfg"]
    assert off.config_hash() not in (base["at-pgd-seed0"].config_hash(), other["at-pgd-seed0"].config_hash())


def test_train_step_takes_the_run_length(monkeypatch):
    import sgtlab

    adv = importlib.import_module("sgtlab.train.methods.adversarial")
    seen = []
    monkeypatch.setattr(adv, "pgd", lambda model, x, y, eps, **kw: seen.append(eps) or x.clone())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4) % 3
    sgtlab.train_step(net, x, y, opt, "at-pgd", train_eps=0.2, step=0, total_steps=10, eps_warmup=0.5)
    sgtlab.train_step(net, x, y, opt, "at-pgd", train_eps=0.2, step=0)  # run length unknown: full budget
    assert seen == pytest.approx([0.2 / 5, 0.2]) and not math.isnan(seen[0])


def test_a_checkpoint_made_before_the_option_resumes_as_warmup_zero(tmp_path):
    """Its config has no eps_warmup: it trained with the full budget, so resuming it with the default
    warm-up is refused (naming the method options) and with warm-up 0 it continues."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sgtlab.errors import CheckpointError

    def cfg(w, epochs=2):
        return TrainConfig(dataset="mnist5k", method="at-pgd", epochs=epochs, batch_size=64, device="cpu",
                           train_subset=128, method_cfg=MethodConfig(train_steps=1, eps_warmup=w))

    fit(cfg(0.0, epochs=1), tmp_path, progress=False)
    path = str(tmp_path / "checkpoint.safetensors")
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        md = f.metadata()
    meta = json.loads(md["sgtlab"])
    del meta["config"]["method_cfg"]["eps_warmup"]  # as sgtlab wrote it before the option
    save_file(tensors, path, metadata={**md, "sgtlab": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"other settings \(method_cfg\)"):
        fit(cfg(0.3), tmp_path, resume=True, progress=False)
    assert fit(cfg(0.0), tmp_path, resume=True, progress=False)["epoch"] == 2
