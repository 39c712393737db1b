"""The sweep's fast paths against its plain loop: batches side by side in single-threaded workers
(`sgtlab.fast.batch_threads`) and no verdict pass for images the attack's own forwards showed fooled."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import sgtlab.evaluate.robustness as rob
from sgtlab.attacks import FGSM, MIFGSM, PGD
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.fast.batch_threads import batch_workers, map_batches, split_batches

ATTACKS = ["fgsm", "pgd", "mifgsm"]
EPS = [0.05, 0.1, 0.2, 0.3]


def _sweep(model, data, **kw):
    return robustness_sweep(model, data, ATTACKS, EPS, n=120, batch_size=32, progress=False, seed=5, **kw)


def _plain_split(idx, batch_size, *_, **__):
    """The plain loop's batches: `split`, one after the other."""
    return list(idx.split(batch_size)), 1


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_map_batches_keeps_the_order_runs_in_threads_and_restores_the_thread_count(two_threads):
    seen = set()

    def fn(job):
        seen.add(threading.current_thread().name)
        assert torch.get_num_threads() == 1
        return job * job

    assert map_batches(fn, list(range(7)), 2) == [j * j for j in range(7)]
    assert any(name.startswith("sgtlab-batch") for name in seen)
    assert torch.get_num_threads() == 2
    seen.clear()
    assert map_batches(lambda j: threading.current_thread().name, [1, 2], 1) == [threading.current_thread().name] * 2


def test_map_batches_passes_an_error_on_and_restores_the_thread_count(two_threads):
    def fn(job):
        if job == 3:
            raise ValueError("batch 3")
        return job

    with pytest.raises(ValueError, match="batch 3"):
        map_batches(fn, list(range(5)), 2)
    assert torch.get_num_threads() == 2


def test_batch_workers_applies_on_a_cpu_with_threads_and_falls_back_otherwise(two_threads):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert batch_workers(model, "cpu", 5) == 2
    assert batch_workers(model, "cpu", 1) == 1  # one batch: all threads on it
    assert batch_workers(model, "cuda", 5) == 1
    assert batch_workers(model, "cpu", 5, thread_safe=False) == 1
    handle = model[1].register_forward_hook(lambda *a: None)  # a hook may keep state across calls
    assert batch_workers(model, "cpu", 5) == 1
    handle.remove()
    torch.set_num_threads(1)
    assert batch_workers(model, "cpu", 5) == 1


def test_split_batches_evens_the_batches_out_over_the_workers(two_threads):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    idx = torch.arange(300)
    batches, workers = split_batches(idx, 128, model, "cpu")  # split: 128, 128, 44
    assert workers == 2 and [len(b) for b in batches] == [75] * 4 and torch.equal(torch.cat(batches), idx)
    batches, workers = split_batches(idx[:40], 128, model, "cpu")  # one batch: one half per thread
    assert workers == 2 and [len(b) for b in batches] == [20, 20]
    assert split_batches(idx[:1], 128, model, "cpu")[1] == 1
    batches, workers = split_batches(idx, 128, model, "cpu", thread_safe=False)  # the plain loop's batches
    assert workers == 1 and [len(b) for b in batches] == [128, 128, 44]
    batches, workers = split_batches(idx, 128, model, "cpu", per_image=False)  # Square: split's, side by side
    assert workers == 2 and [len(b) for b in batches] == [128, 128, 44]
    torch.set_num_threads(1)
    assert [len(b) for b in split_batches(idx, 128, model, "cpu")[0]] == [128, 128, 44]


def test_which_attacks_may_run_side_by_side():
    assert FGSM().thread_safe and not FGSM(random_start=True).thread_safe
    assert PGD().thread_safe and not PGD(restarts=3).thread_safe
    assert MIFGSM().thread_safe
    assert PGD().reports_fooled and MIFGSM().reports_fooled and not FGSM().reports_fooled


def test_side_by_side_batches_give_the_single_threaded_loops_numbers(trained_model, mnist5k_test, monkeypatch,
                                                                     two_threads):
    """Each batch is computed by one thread either way: the same per-image outcomes, bit for bit."""
    calls = []
    real = rob.map_batches

    def spy(fn, jobs, workers):
        calls.append(workers)
        return real(fn, jobs, workers)

    monkeypatch.setattr(rob, "map_batches", spy)
    fast = _sweep(trained_model, mnist5k_test)
    assert max(calls) == 2  # it did run side by side
    monkeypatch.setattr(rob, "split_batches", _plain_split)
    torch.set_num_threads(1)
    plain = _sweep(trained_model, mnist5k_test)
    for a in ATTACKS:
        assert torch.equal(fast.first_fooled[a], plain.first_fooled[a]), a
    assert fast.info["images_attacked"] == plain.info["images_attacked"]


def test_images_the_attack_showed_fooled_get_no_second_verdict_and_no_outcome_changes(trained_model, mnist5k_test,
                                                                                       monkeypatch):
    """Skipping the verdict pass for images an early-stop forward showed misclassified changes no
    per-image outcome; with bf16 autocast (forwards not the float32 model's) every image is judged."""
    monkeypatch.setattr(rob, "split_batches", _plain_split)
    forwards = []
    real_forward = type(trained_model).forward

    def counting(self, x):
        if not torch.is_grad_enabled():
            forwards.append(len(x))
        return real_forward(self, x)

    monkeypatch.setattr(type(trained_model), "forward", counting)
    skipping = _sweep(trained_model, mnist5k_test)
    judged_skipping = sum(forwards)
    forwards.clear()
    for cls in (PGD, MIFGSM):
        monkeypatch.setattr(cls, "reports_fooled", property(lambda self: False))
    judging_all = _sweep(trained_model, mnist5k_test)
    assert sum(forwards) > judged_skipping  # fewer verdict passes, the same outcomes
    for a in ATTACKS:
        assert torch.equal(skipping.first_fooled[a], judging_all.first_fooled[a]), a


@pytest.mark.parametrize("member,restarts,queries,eps,bs", [("pgd-restarts", 2, 0, [0.1, 0.2], 16),
                                                           ("square", 0, 300, [0.2, 0.3], 6)])
def test_the_suites_members_side_by_side_give_the_single_threaded_outcomes(trained_model, mnist5k_test, monkeypatch,
                                                                         two_threads, member, restarts, queries,
                                                                         eps, bs):
    """PGD restarts (per image) and Square (one square per query for a whole batch: the same batches
    either way) give, side by side, the outcomes of the single-threaded loop."""
    import sgtlab.evaluate.headline_suite as hs

    def run():
        res = robustness_sweep(trained_model, mnist5k_test, ["fgsm"], eps, n=80, batch_size=bs, progress=False,
                               seed=2)
        hs.headline_suite(trained_model, mnist5k_test.subset(80), res, eps, restarts=restarts,
                          square_queries=queries, batch_size=bs, seed=2)
        return res

    calls, splits = [], []
    real, real_split = hs.map_batches, hs.split_batches
    monkeypatch.setattr(hs, "map_batches", lambda fn, jobs, workers: calls.append(workers) or real(fn, jobs, workers))
    monkeypatch.setattr(hs, "split_batches", lambda *a: splits.append(a[-1]) or real_split(*a))
    fast = run()
    assert max(calls) == 2
    assert set(splits) == {member != "square"}  # per image, or the batches of the single-threaded loop
    monkeypatch.setattr(hs, "split_batches", _plain_split)
    monkeypatch.setattr(rob, "split_batches", _plain_split)
    torch.set_num_threads(1)
    plain = run()
    assert fast.folded.keys() == plain.folded.keys()
    cols = [c for c in fast.folded if c.startswith(f"suite:{member}@")]
    # the member fooled images FGSM had not: its work was compared, not only its skipping
    assert cols and any((fast.folded_ran[c] & ~fast.folded[c][1]).any() for c in cols)
    for col in fast.folded:
        assert torch.equal(fast.folded[col][1], plain.folded[col][1]), col
        assert torch.equal(fast.folded_ran[col], plain.folded_ran[col]), col
    assert torch.equal(fast.first_fooled["ensemble"], plain.first_fooled["ensemble"])
