"""Measured time estimates of an experiment, for `sgtlab reproduce --dry-run` / `--estimate`.

Nothing here is a static guess: on the device the runs would use, with the thread count each run
would get, it times a few real training steps of every distinct training setup of the preset
(method, its options, model, batch size) and runs the real evaluation stages (robustness sweep,
gradient-masking checks, saliency metrics) on a small slice of the test set, then scales:

- training: seconds per step x steps per epoch x epochs, plus the per-epoch test accuracy
  (seconds per image of a no-grad forward x test images x epochs);
- evaluation: timed on two slice sizes (a fixed part and a part per image), extrapolated to the
  run's sizes, once per distinct evaluation setup, on the model of the timed ST steps (trained
  for those few steps on the real data);
- per run: reading the data set (measured) and, per worker process, its start-up.

The attacks stop early per sample once it is fooled, so a robust model (AT, SGA, ASGT, SCAAT)
spends far longer in the sweep than the barely trained pilot model. For those runs the pilot plays
a model that nothing fools: its own predictions as labels and every eps shrunk by `ROBUST_SHRINK`,
so every attack runs every step on every image at every eps (the same kernels, the same sizes).
Measured on asgt-mnist (MNIST, eps 0.1-0.3, its robust runs robust on 86-97 % of the images):
their evaluation took 6.3-6.7 min a run; timed on the ST pilot it was estimated at 3.3 min, timed
this way at 6.1 min. Training steps are timed after two warm-up steps, and real epochs ran 5-15 %
longer (data order, the per-epoch test accuracy, the eps warm-up). On a GPU, runs that share the
device are assumed not to slow each other (an optimistic bound); the serial figure is printed
beside it.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from sgtlab.data import TensorData, dataset_info, load_dataset
from sgtlab.errors import DataError
from sgtlab.experiments.checks import EXPLAIN_OWN_KEYS

# images per split of the data sets whose files may be absent when estimating (the standard sizes)
STANDARD_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "decoy-mnist": (60000, 10000),
                  "cifar10": (50000, 10000)}
PILOT_IMAGES = 32      # test images of the evaluation pilot (also timed on a quarter of them)
ROBUST_SHRINK = 1e-4   # eps factor of the robust pilot: no image is fooled, so no attack stops early
WORKER_START_S = 4.0   # a spawned worker process: Python, torch and sgtlab imports (measured ~3-4 s here)


@dataclass
class RunEstimate:
    name: str
    train_s: float
    eval_s: float
    other_s: float
    step_ms: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.other_s


@dataclass
class Estimate:
    runs: list[RunEstimate]
    workers: int
    threads: int
    device: str
    makespan_s: float
    serial_s: float
    data_note: str = ""
    notes: list[str] = field(default_factory=list)


def _data(tc, split: str, n: int | None) -> tuple[TensorData, bool]:
    """(data, real): the run's data when its files are here, else random images of its shape."""
    try:
        return load_dataset(tc.dataset, split, tc.data_dir, download=False).subset(n), True
    except DataError:
        info = dataset_info(tc.dataset)
        size = STANDARD_SIZES.get(tc.dataset, (60000, 10000))[split == "test"]
        size = min(size, n) if n else size
        g = torch.Generator().manual_seed(0)
        return TensorData(torch.rand(size, *info.shape, generator=g),
                          torch.randint(0, info.num_classes, (size,), generator=g), tc.dataset), False


def time_training_steps(tc, train: TensorData, device: torch.device, steps: int = 4, warmup: int = 2):
    """(median seconds per training step of `tc`'s method on real batches, the model after them)."""
    from sgtlab.fast.graphs import graphed
    from sgtlab.train.loop import make_model, make_optimizer
    from sgtlab.train.methods import METHODS, StepContext

    method = METHODS.get(tc.method)
    torch.manual_seed(tc.seed)
    model, _ = make_model(tc)
    model.to(device).train()
    opt = make_optimizer(tc, model)
    net = graphed(model, device, tc.cuda_graphs)  # as the loop runs it (the warm-up steps record the graphs)
    state = method.init_state(len(train), tc.method_cfg, device) if method.init_state else {}
    bs = min(tc.batch_size, len(train))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        idx = torch.arange(i * bs, (i + 1) * bs) % len(train)
        x, y = train.x[idx].to(device), train.y[idx].to(device)
        sync()
        t0 = time.perf_counter()
        ctx = StepContext(idx=idx.to(device), epoch=0, step=i, state=state, module=model)
        loss, _ = method.fn(net, x, y, tc.method_cfg, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), model


def time_evaluation(model, tc, attack: dict[str, Any], explain: dict[str, Any], test: TensorData,
                    device: torch.device, robust: bool = False) -> tuple[float, float]:
    """(seconds of the run's evaluation stages scaled to their sizes, seconds per image of a
    no-grad forward), from the real stages on the first `PILOT_IMAGES` test images and on a quarter
    of them: a fixed part and a part per image, extrapolated to the run's sizes. `robust`: time the
    attacks as on a model that nothing fools (`robust_pilot`), for adversarially trained runs."""
    from sgtlab.evaluate import accuracy
    from sgtlab.evaluate.interpretability import interpretability_metrics
    from sgtlab.evaluate.headline_suite import check_suite, headline_suite, suite_eps
    from sgtlab.evaluate.masking_checks import gradient_masking_checks
    from sgtlab.evaluate.robustness import robustness_sweep
    from sgtlab.experiments.stages import attack_plan, headline_budgets

    model.eval()
    t0 = time.perf_counter()
    accuracy(model, test.subset(min(len(test), 1000)))
    fwd_per_image = (time.perf_counter() - t0) / min(len(test), 1000)
    attack_test = test
    if robust:
        attack, attack_test = robust_pilot(model, attack, test.subset(min(len(test), PILOT_IMAGES)))
    n_att = min(attack.get("n") or len(test), len(test))
    checks = attack.get("checks", False)
    chk = dict(checks) if isinstance(checks, dict) else {}
    n_chk = min(chk.pop("n", 500), n_att)
    n_exp = min(explain.get("n") or len(test), len(test))
    opts = {key: v for key, v in explain.items() if key not in EXPLAIN_OWN_KEYS}

    def timed(fn, k: int, data: TensorData) -> float:
        t0 = time.perf_counter()
        fn(data.subset(k))
        return time.perf_counter() - t0

    suite = check_suite(attack.get("suite", True))
    suite_opts = {"restarts": 0, "square_queries": 0, **(suite or {})}
    suite_opts.setdefault("steps", attack.get("steps", 10))

    def sweep_and_suite(d):  # the sweep, then the headline suite on the images it left robust
        res = robustness_sweep(model, d, attack_plan(attack), attack.get("eps", []), seed=tc.seed, progress=False,
                               cuda_graphs=attack.get("cuda_graphs", False))
        if suite or attack.get("autoattack"):
            headline_suite(model, d, res, suite_eps(res.eps, headline_budgets(attack, d)),
                           autoattack=bool(attack.get("autoattack")), seed=tc.seed, **suite_opts)

    work = [(n_att, sweep_and_suite, attack_test)]
    if checks:
        work.append((n_chk, lambda d: gradient_masking_checks(model, d, seed=tc.seed, progress=False, n=None, **chk),
                     test))
    if explain.get("methods"):
        work.append((n_exp, lambda d: interpretability_metrics(model, d, explain["methods"], n=None, seed=tc.seed,
                                                                metrics=explain.get("metrics", "all"), progress=False,
                                                                **opts), test))
    total = 0.0
    for n, fn, data in work:
        # two slice sizes: a stage's time is a fixed part plus a part per image; the fixed part is
        # not scaled up with the images
        large = min(PILOT_IMAGES, n, len(data))
        small = max(1, large // 4)
        b = timed(fn, large, data)
        if n <= large:
            total += b
            continue
        a = timed(fn, small, data)
        per = max((b - a) / (large - small), b / large / 2)  # floor: noise must not make it free
        total += max(0.0, b - per * large) + per * n
    return total, fwd_per_image


def robust_pilot(model, attack: dict[str, Any], data: TensorData) -> tuple[dict[str, Any], TensorData]:
    """The attack section and images on which `model` acts as a model that nothing fools: labels are
    its own predictions (clean accuracy 100 %) and the eps grid and headline budgets shrink by
    `ROBUST_SHRINK` (no prediction flips), so no attack stops early on any image."""
    from sgtlab.evaluate import predict
    from sgtlab.experiments.stages import headline_budgets

    shrunk = {**attack, "eps": [ROBUST_SHRINK * float(e) for e in attack.get("eps", [])],
              "headline_eps": [ROBUST_SHRINK * float(e) for e in headline_budgets(attack, data)]}
    return shrunk, TensorData(data.x, predict(model, data.x).cpu(), data.name)


def _train_key(tc) -> str:
    d = tc.to_dict()
    for k in ("seed", "epochs", "device", "data_dir", "eval_subset"):
        d.pop(k, None)
    return json.dumps(d, sort_keys=True)


def schedule(times: list[float], slots: int) -> float:
    """Finish time of runs started in order, each on the first free of `slots` (as the executors do)."""
    free = [0.0] * max(1, slots)
    for t in times:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += t
    return max(free) if times else 0.0


def estimate_experiment(cfg: dict[str, Any], workers: int = 1, device: str | None = None,
                        threads: int | None = None, slots: int | None = None,
                        names: list[str] | None = None) -> Estimate:
    """Time the preset's pieces on this machine and project every run and the whole experiment.
    `threads`: torch threads per run (default: this process's threads / workers on a CPU);
    `slots`: runs at once (default `workers`; on GPUs the worker plan's total); `names`: only these
    runs (e.g. those not done yet)."""
    from sgtlab.device import resolve_device
    from sgtlab.experiments.presets import expand
    from sgtlab.train import TrainConfig

    specs = [s for s in expand(cfg) if names is None or s.name in names]
    first = TrainConfig.from_dict(specs[0].train)
    dev = resolve_device(device or first.device)
    before = torch.get_num_threads()
    if threads is None:
        threads = max(1, before // workers) if dev.type == "cpu" else before
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        train, real = _data(first, "train", first.train_subset)
        test, _ = _data(first, "test", None)
        load_s = time.perf_counter() - t0 if real else 0.0
        steps: dict[str, tuple[float, Any]] = {}
        evals: dict[str, tuple[float, float]] = {}
        pilot_model = None
        runs = []
        for s in specs:
            tc = TrainConfig.from_dict(s.train)
            key = _train_key(tc)
            if key not in steps:
                steps[key] = time_training_steps(tc, train, dev)
                if tc.method == "st" or pilot_model is None:
                    pilot_model = steps[key][1]
            ekey = json.dumps([s.attack, s.explain, tc.model, tc.dataset, adversarially_trained(tc.method)],
                              sort_keys=True, default=str)
            runs.append((s, tc, key, ekey))
        for s, tc, key, ekey in runs:
            if ekey not in evals:
                evals[ekey] = time_evaluation(pilot_model, tc, s.attack, s.explain, test, dev,
                                              robust=adversarially_trained(tc.method))
        out = []
        for s, tc, key, ekey in runs:
            step_s = steps[key][0]
            n_train = len(train) if tc.train_subset is None else min(tc.train_subset, len(train))
            eval_s, fwd = evals[ekey]
            n_test = len(test) if tc.eval_subset is None else min(tc.eval_subset, len(test))
            train_s = tc.epochs * (math.ceil(n_train / tc.batch_size) * step_s + n_test * fwd)
            out.append(RunEstimate(s.name, train_s, eval_s, load_s, 1e3 * step_s))
    finally:
        torch.set_num_threads(before)
    slots = slots or workers
    times = [r.total_s for r in out]
    start = WORKER_START_S * min(slots, len(out)) / max(1, slots) if slots > 1 else 0.0
    est = Estimate(out, workers, threads, str(dev), schedule(times, slots) + start, sum(times),
                   "" if real else f"{first.dataset} files not found: random images of the standard size used")
    if dev.type == "cuda" and slots > 1:
        est.notes.append("runs sharing a GPU are assumed not to slow each other (optimistic); "
                         "the serial figure is the pessimistic bound")
    if any(adversarially_trained(s.train.get("method")) for s in specs):
        est.notes.append("the evaluation of adversarially trained runs is timed as if no attack fooled any "
                         "image (a robust model's attacks rarely stop early)")
    return est


def adversarially_trained(method: str | None) -> bool:
    """Whether a run's model is expected to resist the attacks (every method but ST and SGT, plug-ins
    included): the estimate then times its evaluation as on a model that nothing fools."""
    return method not in ("st", "sgt")


def _fmt(sec: float) -> str:
    if sec < 90:
        return f"{sec:.0f} s"
    if sec < 5400:
        return f"{sec / 60:.1f} min"
    return f"{sec / 3600:.1f} h"


def format_estimate(est: Estimate) -> str:
    lines = [f"{'run':28s} {'step':>9s} {'train':>9s} {'eval':>9s} {'total':>9s}"]
    for r in est.runs:
        lines.append(f"{r.name:28s} {r.step_ms:6.0f} ms {_fmt(r.train_s):>9s} {_fmt(r.eval_s):>9s} "
                     f"{_fmt(r.total_s):>9s}")
    lines.append(f"projected: {_fmt(est.makespan_s)} with {est.workers} worker(s) on {est.device} "
                 f"({est.threads} thread(s) each); one run at a time: {_fmt(est.serial_s)}")
    lines += [f"note: {n}" for n in ([est.data_note] if est.data_note else []) + est.notes]
    return "\n".join(lines)
