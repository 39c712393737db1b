"""One attack suite on every headline image.

The sweep (`robustness_sweep`) runs the preset's attacks (FGSM, PGD-10, ...) at every eps of the
grid. At each headline budget, `headline_suite` adds the stronger attacks on *every* image of the
evaluated set: PGD with `restarts` further random starts, the gradient-free Square (the reference
code, pyautoattack; `square_queries` queries) and, where asked, AutoAttack-standard. The headline,
the ensemble, is then per image the worst case over the same attacks for every image.

Each member attacks only the images that no cheaper attack has fooled at that eps yet (the sweep's
attacks at that eps or, nested, a smaller one; the members before it). On an image already fooled
the worst case over the suite is decided whatever the member would do there, so every image's
headline outcome is that of running every member on every image; only the work is not. How many
images each member ran on is recorded (`robustness.json`: `suite` and `folded`), so a report can
say it.

The members' per-image outcomes are folded into the sweep result (`RobustnessResult.fold`) as
columns `suite:pgd-restarts@EPS`, `suite:square@EPS`, `suite:autoattack@EPS` (0/1 where the member
ran, blank where a cheaper attack had fooled the image or it was misclassified clean).

Randomness, per image: restart r's random starts at the j-th grid eps are drawn for the whole
evaluated set (`torch.Generator().manual_seed(seed + RESTART_SEED * (r + 1) + j)`, uniform in the
eps-ball) and indexed, so an image starts where it would in a run on all images, whichever images
are skipped; independent of the sweep's own PGD start (`seed + j`). Square's reference code draws
its initial stripes for a batch at once, so its result on one image depends on the batch it is in
(as it does with any batch size): a draw from the same attack, not bit for bit an all-image run's.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from sgtlab.attacks import PGD, build_attack
from sgtlab.device import eval_batch_size, eval_mode, model_device
from sgtlab.errors import SgtlabError
from sgtlab.fast.batch_threads import map_batches, split_batches

#: the suite of the presets unless they say otherwise (`attack.suite`); quick's timing: docs/attacks.md
SUITE_DEFAULTS = {"restarts": 5, "square_queries": 300}
SUITE_KEYS = ("restarts", "square_queries", "steps")
RESTART_SEED = 10_000  # restart r at grid index j: seed + RESTART_SEED * (r + 1) + j


def suite_eps(grid: Sequence[float], headline: Sequence[float]) -> list[float]:
    """The grid values that are headline budgets (as the report matches them, 1e-4 relative); the
    grid's largest value when it holds none of them (the report then headlines that one)."""
    found = sorted({g for w in headline for g in grid if math.isclose(g, float(w), rel_tol=1e-4)})
    if found or not len(grid):
        return found
    return [max(grid)]


def check_suite(suite: Any, where: str = "attack.suite") -> dict[str, int] | None:
    """`true` (the defaults), `false`/None (no suite) or a mapping of `restarts` (>= 0),
    `square_queries` (>= 0; 0: no Square) and `steps` (>= 1, default the sweep's) -> the options
    with the defaults filled in, or None. One-line errors."""
    if suite is None or suite is False:
        return None
    if suite is True:
        return dict(SUITE_DEFAULTS)
    if not isinstance(suite, dict):
        raise SgtlabError(f"{where} must be true, false or a mapping like {{restarts: 5, square_queries: 300}}, "
                          f"got {suite!r}"[:300])
    unknown = sorted(set(map(str, suite)) - set(SUITE_KEYS))
    if unknown:
        raise SgtlabError(f"unknown {where} options: {', '.join(unknown)}; known: {', '.join(SUITE_KEYS)}"[:300])
    out = {**SUITE_DEFAULTS, **suite}
    for key in SUITE_KEYS:
        v, lo = out.get(key), 1 if key == "steps" else 0
        if key in out and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 1_000_000):
            raise SgtlabError(f"{where}.{key} must be an integer in {lo}..1000000, got {v!r}"[:300])
    return out


def headline_suite(model: nn.Module, data, result, eps: Sequence[float], *, restarts: int = 5, steps: int = 10,
                   square_queries: int = 300, autoattack: bool = False, batch_size: int | None = None,
                   seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run the suite at each of `eps` (values of `result`'s grid) on every image of `data` (the
    images `result` was measured on, in its order) that no cheaper attack has fooled there, and fold
    the outcomes into `result`'s ensemble (made if the sweep had none). Members, in order: PGD with
    `steps` steps and `restarts` random starts (0: none), Square with `square_queries` queries (0:
    none), AutoAttack-standard (`autoattack=True`). Returns (and stores in `result.info["suite"]`)
    what ran: `{"eps", "attacks": {member: description}, "images": {"EPS": {"n": images,
    member: images it ran on}}, "seed"}`."""
    from tqdm.auto import tqdm

    from sgtlab.data.inputs import as_data

    data = as_data(data)
    x, y = data.x.detach().cpu(), data.y.detach().cpu()
    if len(x) != result.n or not torch.equal(y, result.labels.cpu()):
        raise SgtlabError(f"the suite runs on the images of the sweep it folds into: {len(x)} images given, "
                          f"the sweep has {result.n} (or their labels differ)")
    check_suite({"restarts": restarts, "square_queries": square_queries, "steps": steps}, "the suite")
    grid_index = {}
    for e in eps:
        j = next((i for i, g in enumerate(result.eps) if math.isclose(g, float(e), rel_tol=1e-9, abs_tol=1e-12)),
                 None)
        if j is None:
            raise SgtlabError(f"the suite's eps {float(e):g} is not on the sweep's grid "
                              f"({', '.join(f'{g:g}' for g in result.eps)})")
        grid_index[result.eps[j]] = j
    device = model_device(model)
    bs = eval_batch_size(batch_size, device)

    def attack_remaining(robust: torch.Tensor, run, thread_safe: bool = False, reports: bool = False,
                         per_image: bool = True) -> None:
        """`run(xb, yb, idx, known)` -> adversarial images of the still-robust samples, batch by
        batch; `known` (bool, per sample; with `reports`) is for the attack to mark the samples its
        own float32 forward showed fooled (no verdict pass for them). Batches of a `thread_safe`
        attack may run side by side (`sgtlab.fast.batch_threads`)."""
        batches, workers = split_batches(robust.nonzero().squeeze(1), bs, model, device, thread_safe, per_image)

        def one(idx: torch.Tensor) -> torch.Tensor:
            xb, yb = x[idx].to(device), y[idx].to(device)
            known = torch.zeros(len(idx), dtype=torch.bool, device=device) if reports else None
            with torch.enable_grad():  # grad mode is per thread
                adv = run(xb, yb, idx, known)
            with torch.no_grad():
                if known is None:
                    return (model(adv).argmax(1) != yb).cpu()
                rest = (~known).nonzero().squeeze(1)
                fooled = known.clone()
                if len(rest):
                    fooled[rest] = model(adv[rest]).argmax(1) != yb[rest]
                return fooled.cpu()

        for idx, fooled in zip(batches, map_batches(one, batches, workers)):
            robust[idx[fooled]] = False

    def pgd_restarts(robust: torch.Tensor, e: float, j: int) -> None:
        attack = PGD(steps=steps)
        for r in range(restarts):
            if not robust.any():
                return
            g = torch.Generator().manual_seed(seed + RESTART_SEED * (r + 1) + j)
            start = torch.empty_like(x).uniform_(-e, e, generator=g)  # for every image: per-image starts
            attack_remaining(robust, lambda xb, yb, idx, known: attack.perturb(
                model, xb, yb, e, early_stop=True, init_delta=start[idx].to(device), fooled=known),
                thread_safe=attack.thread_safe, reports=attack.reports_fooled)

    def reference(name: str, **kw):
        attack = build_attack(name, seed=seed, **kw)
        # side by side only where the attack keeps its random numbers to itself (Square; AutoAttack's
        # reference code seeds and draws from the global generator: one batch after the other), and
        # in the batches of the plain loop: its images depend on their batch (one square per query)
        return lambda robust, e, j: attack_remaining(
            robust, lambda xb, yb, idx, known: attack.perturb(model, xb, yb, e), thread_safe=attack.thread_safe,
            per_image=False)

    members: list[tuple[str, str, Any]] = []
    if restarts:
        members.append(("pgd-restarts", f"PGD ({steps} steps, {restarts} more random start{'s' * (restarts != 1)})", pgd_restarts))
    if square_queries:
        members.append(("square", f"Square ({square_queries} queries)", reference("square", queries=square_queries)))
    if autoattack:
        members.append(("autoattack", "AutoAttack-standard (APGD-CE, APGD-T, FAB-T, Square 5000)",
                        reference("autoattack")))
    result.add_ensemble()
    summary: dict[str, Any] = {"eps": sorted(grid_index), "attacks": {m: d for m, d, _ in members},
                               "images": {}, "seed": seed}
    bar = tqdm(total=len(grid_index) * len(members), disable=not progress, desc="suite", unit="attack", leave=False)
    with eval_mode(model):
        for e in sorted(grid_index):  # ascending: nested, an image fooled at a smaller eps is done
            counts = summary["images"][f"{e:g}"] = {"n": result.n}
            for label, desc, run in members:
                bar.set_postfix_str(f"{label} eps={e:g}")
                ran = result.robust("ensemble", e).clone()  # not yet fooled by any cheaper attack
                robust = ran.clone()
                if ran.any():
                    run(robust, e, grid_index[e])
                note = desc[desc.index("(") + 1:-1] if "(" in desc else None
                result.fold(f"suite:{label}", e, robust, note=note, ran=ran)
                counts[label] = int(ran.sum())
                bar.update(1)
    bar.close()
    result.info["suite"] = summary
    return summary
