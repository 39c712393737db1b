"""The robustness sweep (`sgtlab.evaluate.robustness`) against closed forms on hand-built models.

Fast (tiny models, a handful of 2 x 2 images), so the mutation run of the module uses them instead of
the tests on the trained MNIST model. What each sample's outcome must be follows from the model:
on `Threshold` every gradient attack moves every pixel up by its whole budget and the sample is
fooled iff its mean pixel + eps exceeds 0.9; on `Band` only a middle band of the mean is fooled, so a
from-scratch FGSM curve rises; on `Lottery` the gradient is zero and only PGD's random start can fool.
"""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn

from sgtlab.attacks import FGSM, PGD, Attack, Ensemble
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness import RobustnessResult, check_eps_grid, resolve_attacks, robustness_sweep
from test_science_attacks import Lottery, Threshold  # class 1 iff the mean pixel > 0.9; zero gradient

INF = math.inf


class Band(nn.Module):
    """z = 1 - 100 (m - 0.65)^2 for the mean pixel m: fooled iff 0.55 < m < 0.75; the loss rises
    with m below 0.65, so from 0.5 FGSM at eps 0.1 lands at 0.6 (fooled), at eps 0.3 at 0.8 (not)."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = 1 - 100 * (x.flatten(1).mean(1) - 0.65) ** 2 + 0 * self.anchor
        return torch.stack([torch.zeros_like(z), z], 1)


def _images(values):
    x = torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return x, torch.zeros(len(values), dtype=torch.long)


# x + eps > 0.9 fools: 0.85 first at 0.1, 0.75 at 0.2, 0.55 at 0.5, 0.3 never; 0.95 is wrong when clean
VALUES = [0.85, 0.75, 0.55, 0.3, 0.95]
FIRST = [0.1, 0.2, 0.5, INF, 0.0]


@pytest.mark.parametrize("batch_size", [None, 2])
def test_nested_sweep_closed_form(batch_size):
    x, y = _images(VALUES)
    res = robustness_sweep(Threshold(), (x, y), ["fgsm", "pgd", "mifgsm", "ensemble"], [0.5, 0.1, 0.2, 0.1],
                           batch_size=batch_size, progress=False, seed=4)
    assert res.eps == [0.1, 0.2, 0.5] and res.attacks == ["fgsm", "pgd", "mifgsm", "ensemble"]
    assert res.sweep == "nested" and res.outcomes is None and res.n == 5
    assert res.labels.tolist() == [0] * 5 and res.clean_pred.tolist() == [0, 0, 0, 0, 1]
    assert res.clean_correct.tolist() == [True] * 4 + [False] and res.clean_accuracy == pytest.approx(0.8)
    for a in res.attacks:
        assert res.first_fooled[a].dtype == torch.float64 and res.first_fooled[a].tolist() == FIRST
        assert res.robust_accuracy[a] == pytest.approx({0.1: 0.6, 0.2: 0.4, 0.5: 0.2})
        # between grid values: robust at eps iff first fooled above it
        assert res.robust(a, 0.15).tolist() == [False, True, True, True, False]
    assert set(res.info["attacks_run"]) == {"fgsm", "pgd", "mifgsm"} and res.info["seed"] == 4
    assert res.info["attacks_run"]["pgd"] == repr(PGD())


def test_the_first_n_images_only():
    x, y = _images(VALUES)
    res = robustness_sweep(Threshold(), (x, y), ["fgsm"], [0.1, 0.2], n=2, progress=False)
    assert res.n == 2 and res.first_fooled["fgsm"].tolist() == [0.1, 0.2]
    one = robustness_sweep(Threshold(), (x, y), ["fgsm"], [0.1, 0.2], n=1, progress=False)
    assert one.n == 1 and one.first_fooled["fgsm"].tolist() == [0.1]


def test_an_eps_of_zero_attacks_nothing():
    x, y = _images(VALUES)
    res = robustness_sweep(Threshold(), (x, y), ["fgsm", "pgd"], [0, 0.1], progress=False)
    assert res.eps == [0.0, 0.1] and all(isinstance(e, float) for e in res.eps)
    for a in ("fgsm", "pgd"):
        assert res.first_fooled[a].tolist() == [0.1, INF, INF, INF, 0.0]
        assert res.robust_accuracy[a] == pytest.approx({0.0: 0.8, 0.1: 0.6})


def test_from_scratch_attacks_every_eps_on_its_own():
    """On Band, FGSM fools 0.5 at eps 0.1 but not at 0.3: from scratch the outcome is robust again at
    0.3, nested it stays fooled (first fooled 0.1). 0.7 is wrong when clean (fooled at every eps)."""
    x, y = _images([0.5, 0.7, 0.2])
    for from_scratch in (False, True):
        res = robustness_sweep(Band(), (x, y), ["fgsm", "ensemble"] if from_scratch else ["fgsm"], [0.3, 0.1],
                               batch_size=2, progress=False, from_scratch=from_scratch)
        assert res.first_fooled["fgsm"].tolist() == [0.1, 0.0, INF]
        if not from_scratch:
            assert res.sweep == "nested" and res.robust("fgsm", 0.3).tolist() == [False, False, True]
            continue
        assert res.sweep == "from-scratch"
        assert res.outcomes["fgsm"].tolist() == [[False, True], [False, False], [True, True]]
        assert res.robust("fgsm", 0.3).tolist() == [True, False, True]
        assert res.robust("fgsm", 0.3 + 1e-12).tolist() == [True, False, True]  # the grid value, up to rounding
        assert res.robust_accuracy["fgsm"] == pytest.approx({0.1: 1 / 3, 0.3: 2 / 3})
        assert torch.equal(res.outcomes["ensemble"], res.outcomes["fgsm"])
        with pytest.raises(SgtlabError, match="grid eps only"):
            res.robust("fgsm", 0.2)
        assert res.to_dict()["sweep"] == "from-scratch" and res.to_dict()["from_scratch"] is True


@pytest.mark.parametrize("from_scratch,seed", [(False, 7), (True, 7), (False, None)])
def test_pgd_random_starts_are_the_documented_seeded_draws(from_scratch, seed):
    """At the j-th eps (ascending) the start is `manual_seed(seed + j); empty_like(x).uniform_(-eps,
    eps)` for the whole set. On Lottery nothing else moves an image, so the outcome of each sample is
    that of its start (reference loop below); nested, a sample fooled at 0.2 is not attacked at 0.3."""
    n, grid = 200, [0.2, 0.3]
    x, y = torch.full((n, 1, 1, 2), 0.6), torch.zeros(n, dtype=torch.long)
    kw = {} if seed is None else {"seed": seed}
    res = robustness_sweep(Lottery(), (x, y), ["pgd"], grid, batch_size=64, progress=False,
                           from_scratch=from_scratch, **kw)
    seed = 0 if seed is None else seed  # the default seed
    assert res.info["seed"] == seed
    fooled = []
    for j, e in enumerate(grid):
        torch.manual_seed(seed + j)
        start = torch.empty_like(x).uniform_(-e, e)
        fooled.append((x + start).clamp(0, 1)[:, 0, 0, 0] > 0.75)
    # either way the first fooling eps is the first start that fools (from scratch: 0.3's start also
    # on samples fooled at 0.2, which changes the outcomes only)
    first = [0.2 if a else 0.3 if b else INF for a, b in zip(fooled[0].tolist(), fooled[1].tolist())]
    if from_scratch:
        assert res.outcomes["pgd"].tolist() == torch.stack([~fooled[0], ~fooled[1]], 1).tolist()
    assert res.first_fooled["pgd"].tolist() == first
    assert 0 < int(fooled[0].sum()) < n and 0 < int(fooled[1].sum()) < n  # the case is not trivial


class _SignModel(nn.Module):
    """Linear, 2 classes: the CE gradient's sign is +-(1, -1, 1, -1) by label (label 1: +)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_each_sample_gets_its_own_clean_gradient():
    """FGSM's gradient at the clean images is computed once for the whole grid: each sample must get
    its own. The verdict follows from x + eps * sign(grad) (reference per sample), also when the samples
    still attacked are a subset (0.1 fools some) split across batches."""
    model = _SignModel()
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(12, 1, 2, 2, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = robustness_sweep(model, (x, y), ["fgsm", "mifgsm"], [0.02, 0.05, 0.1], batch_size=5, progress=False)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 2, 2)
    for a in ("fgsm", "mifgsm"):  # MI-FGSM's steps all have the same sign too: it ends at x + eps * sign
        want = []
        for i in range(12):
            first = INF
            for e in (0.02, 0.05, 0.1):
                adv = (x[i:i + 1] + e * (1.0 if y[i] == 1 else -1.0) * sign).clamp(0, 1)
                if model(adv).argmax(1).item() != y[i].item():
                    first = e
                    break
            want.append(first)
        assert res.first_fooled[a].tolist() == want
    assert len(set(res.first_fooled["fgsm"].tolist())) >= 3  # the case is not trivial


def test_ensemble_among_attacks_is_their_worst_case_and_alone_runs_its_members():
    x, y = _images([0.5, 0.7, 0.2])
    # Band: FGSM fools 0.5 at 0.1 only; PGD (small steps, no random start) at 0.1 and 0.3
    attacks = {"fgsm": FGSM(), "pgd": PGD(steps=5, alpha=0.02, random_start=False), "ensemble": "ensemble"}
    res = robustness_sweep(Band(), (x, y), attacks, [0.03, 0.1], progress=False)
    assert res.first_fooled["fgsm"].tolist() == [0.1, 0.0, INF]
    assert res.first_fooled["pgd"].tolist() == [0.1, 0.0, INF]
    assert res.first_fooled["ensemble"].tolist() == [0.1, 0.0, INF]
    assert "ensemble" not in res.info["attacks_run"]
    first = robustness_sweep(Band(), (x, y), ["ensemble", "fgsm"], [0.03, 0.1], progress=False)  # named first
    assert first.attacks == ["ensemble", "fgsm"] and first.first_fooled["ensemble"].tolist() == [0.1, 0.0, INF]
    x2, y2 = _images([0.85, 0.75, 0.3])
    alone = robustness_sweep(Threshold(), (x2, y2), ["ensemble"], [0.1, 0.2], progress=False)
    assert alone.first_fooled["ensemble"].tolist() == [0.1, 0.2, INF]
    assert alone.info["attacks_run"]["ensemble"] == repr(Ensemble())
    # the worst case per sample over different attacks: PGD from a start far off fools what FGSM does not
    x3, y3 = _images([0.85, 0.75])
    mixed = robustness_sweep(Threshold(), (x3, y3), {"weak": PGD(steps=1, alpha=0.01, random_start=False),
                                                     "fgsm": FGSM(), "ensemble": "ensemble"}, [0.1, 0.2],
                             progress=False)
    assert mixed.first_fooled["weak"].tolist() == [INF, INF]
    assert mixed.first_fooled["ensemble"].tolist() == mixed.first_fooled["fgsm"].tolist() == [0.1, 0.2]


def test_resolve_attacks_names_objects_and_labels():
    plan = resolve_attacks(["fgsm", PGD(steps=3)])
    assert list(plan) == ["fgsm", "pgd"] and isinstance(plan["fgsm"], FGSM) and plan["pgd"].steps == 3
    plan = resolve_attacks({"pgd-3": PGD(steps=3), "f": "fgsm", "ensemble": "ensemble"})
    assert list(plan) == ["pgd-3", "f", "ensemble"] and plan["ensemble"] is None and isinstance(plan["f"], FGSM)
    assert isinstance(resolve_attacks(["ensemble"])["ensemble"], Ensemble)
    for bad in ([], ["fgsm", "fgsm"], ["fgsm", FGSM()], ["nope"]):
        with pytest.raises(SgtlabError):
            resolve_attacks(bad)


def test_eps_grid_is_sorted_unique_and_checked():
    assert check_eps_grid([0.3, 0, 0.1, 0.3]) == [0.0, 0.1, 0.3]
    assert all(type(e) is float for e in check_eps_grid([1, 0]))
    for bad in ([], [0.1, -0.1], [float("nan")], [float("inf")], [0.1, -float("inf")]):
        with pytest.raises(SgtlabError, match="eps"):
            check_eps_grid(bad)


def test_bad_arguments_are_refused_before_the_model_runs():
    class Never(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise AssertionError("the model ran")

    x, y = _images([0.5, 0.6])
    for kw in ({"n": 0}, {"n": -1}, {"autocast": "fp16"}, {"eps": [-0.1]}, {"eps": []}, {"attacks": []},
               {"batch_size": 0}):
        args = {"attacks": ["fgsm"], "eps": [0.1], **kw}
        with pytest.raises(SgtlabError):
            robustness_sweep(Never(), (x, y), progress=False, **args)
    with pytest.raises(SgtlabError, match=r"\[0, 1\]"):
        robustness_sweep(Never(), (x + 0.6, y), ["fgsm"], [0.1], progress=False)


class _Recorder(Threshold):
    """Records, per forward pass, whether it ran under autocast and whether its input needs a gradient
    (an attack step) or not (the clean pass, the verdict)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((torch.is_autocast_enabled("cpu"), x.requires_grad, self.training))
        return super().forward(x)


@pytest.mark.parametrize("autocast", [None, "bf16"])
def test_bf16_runs_the_attack_steps_only_and_keeps_float32_verdicts(autocast):
    """FGSM's gradient is the clean pass's (docs/attacks.md: it stays float32): with FGSM alone, no
    forward pass runs under autocast; PGD's steps do."""
    model = _Recorder()
    x, y = _images([0.85, 0.75, 0.3])
    res = robustness_sweep(model, (x, y), ["fgsm"], [0.1, 0.2], progress=False, autocast=autocast)
    assert res.first_fooled["fgsm"].tolist() == [0.1, 0.2, INF]
    assert model.calls and not any(c[0] for c in model.calls) and any(c[1] for c in model.calls)
    model = _Recorder()
    model.train()
    res = robustness_sweep(model, (x, y), ["pgd"], [0.1, 0.2], progress=False, autocast=autocast)
    assert res.first_fooled["pgd"].tolist() == [0.1, 0.2, INF]
    steps = [c for c in model.calls if c[1]]
    others = [c for c in model.calls if not c[1]]
    assert steps and others and not any(c[2] for c in model.calls)  # eval mode throughout
    assert all(c[0] == (autocast == "bf16") for c in steps) and not any(c[0] for c in others)
    assert model.training  # mode restored


def test_progress_bar_only_when_asked(capfd):
    x, y = _images([0.85, 0.3])
    robustness_sweep(Threshold(), (x, y), ["fgsm"], [0.1], progress=False)
    assert capfd.readouterr().err == ""
    robustness_sweep(Threshold(), (x, y), ["fgsm"], [0.1, 0.2])  # shown by default
    err = capfd.readouterr().err
    assert "attacks" in err and "/2" in err  # one attack x two eps


# --- the result: per-sample table, files, text ------------------------------------------------

def _result(ids=None):
    first = {"pgd": torch.tensor([0.1, INF, 0.0, 0.3], dtype=torch.float64)}
    return RobustnessResult(["pgd"], [0.1, 0.3], torch.tensor([1, 0, 1, 2]), torch.tensor([1, 0, 0, 2]), first,
                            info={"seed": 2}, sample_ids=ids)


def test_per_sample_rows_and_files(tmp_path):
    r = _result(ids=torch.tensor([10, 11, 12, 13]))
    rows = r.per_sample()
    assert rows[0] == {"index": 0, "test_index": 10, "label": 1, "clean_pred": 1, "clean_correct": 1,
                       "pgd:first_fooled_eps": 0.1, "pgd@0.1": 0, "pgd@0.3": 0}
    assert [row["pgd@0.1"] for row in rows] == [0, 1, 0, 1] and [row["pgd@0.3"] for row in rows] == [0, 1, 0, 0]
    assert [row["clean_correct"] for row in rows] == [1, 1, 0, 1] and rows[3]["test_index"] == 13
    assert "test_index" not in _result().per_sample()[0]
    paths = r.save(tmp_path)
    assert paths == {"json": tmp_path / "robustness.json", "csv": tmp_path / "robustness_per_sample.csv"}
    table = list(csv.DictReader(open(paths["csv"])))
    assert list(table[0]) == list(rows[0]) and [t["pgd@0.3"] for t in table] == ["0", "1", "0", "0"]
    assert [float(t["pgd:first_fooled_eps"]) for t in table] == [0.1, INF, 0.0, 0.3]
    stored = json.loads(paths["json"].read_text())
    assert stored == {"clean_accuracy": 0.75, "n": 4, "eps": [0.1, 0.3], "sweep": "nested", "from_scratch": False,
                      "robust_accuracy": {"pgd": {"0.1": 0.5, "0.3": 0.25}}, "seed": 2}


def test_an_empty_result_saves_a_header_only(tmp_path):
    r = RobustnessResult(["pgd"], [0.1], torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                         {"pgd": torch.empty(0, dtype=torch.float64)})
    assert math.isnan(r.clean_accuracy) and r.per_sample() == []
    r.save(tmp_path)
    assert (tmp_path / "robustness_per_sample.csv").read_bytes() == b"index\n"
    one = RobustnessResult(["pgd"], [0.1], torch.tensor([0]), torch.tensor([0]),
                           {"pgd": torch.tensor([0.1], dtype=torch.float64)})
    one.save(tmp_path)
    assert (tmp_path / "robustness_per_sample.csv").read_bytes() == (
        b"index,label,clean_pred,clean_correct,pgd:first_fooled_eps,pgd@0.1\n0,0,0,1,0.1,0\n")


def test_table_text():
    lines = _result().table().splitlines()
    assert lines[0] == "clean accuracy: 75.0 % (4 images)"
    assert [line.split() for line in lines[1:]] == [["attack", "0.1", "0.3"], ["pgd", "50.0", "25.0"]]
    assert len({len(line) for line in lines[1:]}) == 1 and not any(line.endswith(" ") for line in lines)
    assert lines[2].startswith("   pgd")  # right-aligned columns


def test_fold_without_an_ensemble_keeps_the_column_only():
    r = _result()
    before = r.first_fooled["pgd"].clone()
    r.fold("square", 0.1, [True, False], note="20 queries")
    assert torch.equal(r.first_fooled["pgd"], before) and "ensemble" not in r.first_fooled
    assert [row.get("square@0.1") for row in r.per_sample()] == [1, 0, "", ""]
    assert r.to_dict()["folded"] == {"square@0.1": {"eps": 0.1, "n": 2, "accuracy": 0.5, "note": "20 queries"}}


def test_fold_above_the_grid_changes_nothing_and_on_the_grid_nests():
    first = {"pgd": torch.tensor([INF, INF, INF], dtype=torch.float64)}
    first["ensemble"] = first["pgd"].clone()
    y = torch.zeros(3, dtype=torch.long)
    r = RobustnessResult(["pgd", "ensemble"], [0.1, 0.3], y, y.clone(), first)
    r.fold("big", 0.5, torch.tensor([False, True, True]))
    assert r.first_fooled["ensemble"].tolist() == [INF, INF, INF]
    r.fold("at", 0.1 + 1e-13, torch.tensor([True, False, True]))  # on the grid, up to rounding
    r.fold("early", 0.05, torch.tensor([True, True, False]))
    assert r.first_fooled["ensemble"].tolist() == [INF, 0.1, 0.1]
    assert r.first_fooled["pgd"].tolist() == [INF, INF, INF]


class _Counter(Attack):
    """Moves every pixel up by eps (on Threshold: fooled iff x + eps > 0.9) and records what the sweep
    hands it: the images per call, eps, and the keyword arguments. Returns bfloat16 images: the
    verdict must still run in the images' own dtype."""

    def __init__(self, early: bool = False, delta: bool = False, grad: bool = False):
        self.supports_early_stop, self.takes_init_delta, self.uses_clean_grad = early, delta, grad
        self.calls = []

    def perturb(self, model, x, y, eps, **kw):
        self.calls.append((x.clone(), eps, kw))
        return (x + eps).clamp(0, 1).to(torch.bfloat16)


def test_the_sweep_attacks_each_still_robust_sample_once_per_eps_and_hands_over_what_is_asked():
    """Nested: at each eps > 0 only the clean-correct samples not fooled yet are attacked, each once
    (batches of 2 here); from scratch every clean-correct sample at every eps > 0. `early_stop`,
    `init_delta` (the documented seeded draw) and `clean_grad` (the gradient at the clean image) go
    only to attacks that declare they use them."""
    x, y = _images(VALUES)  # clean-correct: the first four; fooled at 0.1, 0.2, 0.5, never
    plain, asks = _Counter(), _Counter(early=True, delta=True, grad=True)
    res = robustness_sweep(Threshold(), (x, y), {"plain": plain, "asks": asks}, [0.0, 0.1, 0.2, 0.5],
                           batch_size=2, progress=False, seed=5)
    assert res.first_fooled["plain"].tolist() == res.first_fooled["asks"].tolist() == FIRST
    sizes = [(len(c[0]), c[1]) for c in plain.calls]
    assert sizes == [(2, 0.1), (2, 0.1), (2, 0.2), (1, 0.2), (2, 0.5)]
    attacked = {e: [round(v, 4) for v in torch.cat([c[0] for c in plain.calls if c[1] == e])[:, 0, 0, 0].tolist()]
                for e in (0.1, 0.2, 0.5)}
    assert attacked == {0.1: [0.85, 0.75, 0.55, 0.3], 0.2: [0.75, 0.55, 0.3], 0.5: [0.55, 0.3]}
    assert all(c[2] == {} for c in plain.calls)
    xg = x.clone().requires_grad_(True)
    # the clean pass runs in batches of 2 (the first four images) with mean CE: each sample's gradient / 2
    grad, = torch.autograd.grad(nn.functional.cross_entropy(Threshold()(xg), y, reduction="sum") / 2, xg)
    for j, e in enumerate([0.0, 0.1, 0.2, 0.5]):
        if e == 0:
            continue
        torch.manual_seed(5 + j)
        start = torch.empty_like(x).uniform_(-e, e)
        calls = [c for c in asks.calls if c[1] == e]
        kws = [c[2] for c in calls]
        assert all(set(k) == {"early_stop", "init_delta", "clean_grad"} and k["early_stop"] is True for k in kws)
        for xs, _, k in calls:  # match each call's rows to the samples by their (distinct) values
            rows_ = [VALUES.index(round(v, 2)) for v in xs[:, 0, 0, 0].tolist()]
            assert torch.equal(k["init_delta"], start[rows_])
            torch.testing.assert_close(k["clean_grad"], grad[rows_])
    scratch = _Counter()
    robustness_sweep(Threshold(), (x, y), {"s": scratch}, [0.1, 0.2], progress=False, from_scratch=True)
    assert [(len(c[0]), c[1]) for c in scratch.calls] == [(4, 0.1), (4, 0.2)]


def test_fold_takes_0_1_outcomes_and_grid_eps_up_to_rounding_also_near_zero():
    y = torch.zeros(3, dtype=torch.long)
    for from_scratch in (False, True):
        first = {"pgd": torch.full((3,), INF, dtype=torch.float64)}
        first["ensemble"] = first["pgd"].clone()
        outcomes = {a: torch.ones(3, 2, dtype=torch.bool) for a in first} if from_scratch else None
        r = RobustnessResult(["pgd", "ensemble"], [0.0, 0.1], y, y.clone(), first, outcomes=outcomes)
        r.fold("ints", 0.1, [1, 0, 1])  # 0/1 outcomes are robust / fooled
        r.fold("tiny", 1e-13, torch.tensor([True, True, False]))  # the grid eps 0, up to rounding
        assert r.robust("ensemble", 0.1).tolist() == [True, False, from_scratch]
        assert r.robust("ensemble", 0.0).tolist() == [True, True, False]
        assert r.robust("ensemble", 1e-13).tolist() == [True, True, False]  # the grid eps 0, up to rounding
        assert [row["ints@0.1"] for row in r.per_sample()] == [1, 0, 1]
