"""torchattacks parity beyond the untargeted calls (issue 27): torchattacks' positional order and
names, targeted modes (by label, random, least likely, by function), `set_normalization_used`,
one-line label checks, signatures; and AutoAttack on any number of classes."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from sgtlab.attacks import FGSM, MIFGSM, PGD
from sgtlab.errors import SgtlabError

ta = pytest.importorskip("torchattacks")
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def colour_cnn(classes=10, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, classes)).eval()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    return colour_cnn(), torch.rand(16, 3, 8, 8), torch.arange(16) % 10


def same(ours, theirs, x, y, seed=3):
    torch.manual_seed(seed)
    a = ours(x, y)
    torch.manual_seed(seed)
    b = theirs(x, y)
    return torch.equal(a, b)


def test_positional_order_is_torchattacks(setup):
    model, x, y = setup
    assert same(PGD(model, 8 / 255, 2 / 255, 10), ta.PGD(model, 8 / 255, 2 / 255, 10), x, y)
    assert same(PGD(model, 8 / 255, 2 / 255, 5, False), ta.PGD(model, 8 / 255, 2 / 255, 5, False), x, y)
    assert same(MIFGSM(model, 8 / 255, 2 / 255, 5, 0.5), ta.MIFGSM(model, 8 / 255, 2 / 255, 5, 0.5), x, y)
    assert same(FGSM(model, 4 / 255), ta.FGSM(model, 4 / 255), x, y)
    with pytest.raises(SgtlabError, match="given twice"):
        PGD(model, 8 / 255, eps=4 / 255)
    with pytest.raises(SgtlabError, match="L-inf"):
        PGD(model, norm="L2")


@pytest.mark.parametrize("cls", ["PGD", "MIFGSM", "FGSM"])
def test_targeted_by_label_equals_torchattacks(setup, cls):
    model, x, y = setup
    args = (8 / 255,) if cls == "FGSM" else (8 / 255, 2 / 255, 5)
    ours = {"PGD": PGD, "MIFGSM": MIFGSM, "FGSM": FGSM}[cls](model, *args, targeted=True)
    theirs = getattr(ta, cls)(model, *args)
    theirs.set_mode_targeted_by_label(quiet=True)
    target = (y + 1) % 10
    assert same(ours, theirs, x, target)
    # targeted steps go towards the target: more images classified as it than untargeted ones
    torch.manual_seed(0)
    adv = ours(x, target)
    assert (model(adv).argmax(1) == target).sum() >= (model(x).argmax(1) == target).sum()


@pytest.mark.parametrize("mode", ["random", "least_likely", "function"])
def test_targeted_modes_equal_torchattacks(setup, mode):
    model, x, y = setup
    ours, theirs = PGD(model, 8 / 255, 2 / 255, 5), ta.PGD(model, 8 / 255, 2 / 255, 5)
    if mode == "random":
        ours.set_mode_targeted_random()
        theirs.set_mode_targeted_random(quiet=True)
    elif mode == "least_likely":
        ours.set_mode_targeted_least_likely(kth_min=2)
        theirs.set_mode_targeted_least_likely(kth_min=2, quiet=True)
    else:
        def f(images, labels):
            return (labels + 3) % 10

        ours.set_mode_targeted_by_function(f)
        theirs.set_mode_targeted_by_function(f, quiet=True)
    assert ours.targeted
    assert same(ours, theirs, x, y)
    ours.set_mode_default()
    assert not ours.targeted and same(ours, ta.PGD(model, 8 / 255, 2 / 255, 5), x, y)


def test_set_normalization_used_equals_torchattacks(setup):
    model, x, y = setup
    xn = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    theirs = ta.PGD(model, 8 / 255, 2 / 255, 5)
    theirs.set_normalization_used(MEAN, STD)
    ours = PGD(model, 8 / 255, 2 / 255, 5).set_normalization_used(MEAN, STD)
    assert same(ours, theirs, xn, y)
    # targeted and normalised together
    theirs.set_mode_targeted_by_label(quiet=True)
    assert same(PGD(model, 8 / 255, 2 / 255, 5, targeted=True).set_normalization_used(MEAN, STD), theirs,
                xn, (y + 1) % 10)
    with pytest.raises(SgtlabError, match="channels"):
        PGD(model).set_normalization_used([0.5], [0.5])(xn, y)


@pytest.mark.parametrize("labels,match", [
    (lambda y: y.float(), "integer class indices"),
    (lambda y: y + 5, r"class indices in \[0, 9\]"),
    (lambda y: y - 1, r"class indices in \[0, 9\]"),
])
def test_labels_checked_in_one_line(setup, labels, match):
    model, x, y = setup
    with pytest.raises(SgtlabError, match=match) as e:
        PGD(model)(x, labels(y))
    assert "\n" not in str(e.value)


def test_refusals_and_signatures(setup):
    from sgtlab.attacks.autoattack import Square

    model, x, y = setup
    with pytest.raises(SgtlabError, match="no targeted mode"):
        Square(model).set_mode_targeted_random()
    with pytest.raises(SgtlabError, match=r"in \[0, 1\].*8/255"):
        PGD(model, 8)(x, y)
    sig = inspect.signature(PGD)
    assert list(sig.parameters)[:5] == ["model", "eps", "alpha", "steps", "random_start"]
    assert "targeted" in sig.parameters and "2.5 * eps / steps" in PGD.__doc__
    assert list(inspect.signature(Square).parameters)[:4] == ["model", "norm", "eps", "n_queries"]


# --- AutoAttack on any number of classes --------------------------------------------------------
def test_autoattack_members_follow_the_class_count():
    from sgtlab.attacks.autoattack import standard_members

    assert standard_members(10) == (["apgd-ce", "apgd-t", "fab-t", "square"], 9)
    assert standard_members(4) == (["apgd-ce", "apgd-t", "fab-t", "square"], 3)
    assert standard_members(3) == (["apgd-ce", "apgd-dlr", "fab-t", "square"], 2)
    assert standard_members(2) == (["apgd-ce", "fab-t", "square"], 1)
    with pytest.raises(SgtlabError, match="at least 2"):
        standard_members(1)


def _few_classes(classes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, classes)).eval()
    x = torch.rand(12, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # all clean-correct: every member has images to attack
    return model, x, y


@pytest.mark.parametrize("classes", [3, 4])
def test_autoattack_on_few_classes_folds_into_the_ensemble(classes, autoattack_small_budgets):
    import sgtlab

    model, x, y = _few_classes(classes)
    eps = 8 / 255
    result = sgtlab.robustness(model, (x, y), [eps], attacks=["pgd", "autoattack", "ensemble"])
    acc = result.robust_accuracy
    aa = autoattack_small_budgets["aa"]
    assert aa.apgd_targeted.n_target_classes == aa.fab.n_target_classes == classes - 1
    assert ("apgd-t" in aa.attacks_to_run) == (classes >= 4)
    assert 0 <= acc["autoattack"][eps] <= 1
    assert acc["ensemble"][eps] <= min(acc["pgd"][eps], acc["autoattack"][eps])


@pytest.mark.slow
@pytest.mark.parametrize("classes", [2, 3, 4, 10])
def test_autoattack_real_budgets_on_any_class_count(classes):
    from sgtlab.attacks.autoattack import AutoAttackStandard

    model, x, y = _few_classes(classes)
    adv = AutoAttackStandard(model, eps=8 / 255)(x, y)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
