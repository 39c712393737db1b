"""What one run does after training, stage by stage (the runner calls them; each writes its own file,
so a rerun skips what is done): the robustness stage (the sweep and the headline suite, folded into
one `robustness.json`; the gradient-masking checks, `checks.json`) and the saliency stage
(`interpretability.json`).
Every stage evaluates the same seeded, class-stratified test subset (`test_data`)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sgtlab.experiments.checks import EXPLAIN_OWN_KEYS
from sgtlab.experiments.store import checks_columns, robustness_columns, saliency_columns
from sgtlab.io import read_json, write_json_atomic


def device(name: str):
    """The torch device of a run's `device` option ("auto", "cpu", "cuda")."""
    from sgtlab.device import resolve_device

    return resolve_device(name)


def test_data(cfg, n: int | None, subset_seed: int = 0):
    """The seeded, class-stratified test subset of size n (shared by every run of an experiment)
    and its indices into the test split."""
    from sgtlab.data import load_dataset
    from sgtlab.data.subsets import stratified_subset

    return stratified_subset(load_dataset(cfg.dataset, "test", cfg.data_dir, verify=cfg.verify), n, subset_seed)


def attack_plan(attack: dict[str, Any]) -> dict[str, Any]:
    """Attack names of the preset -> attack objects; `attack.steps` goes to every attack that has steps."""
    import inspect

    from sgtlab.attacks import ATTACKS, build_attack

    plan: dict[str, Any] = {}
    for name in attack.get("attacks", ["fgsm", "pgd", "mifgsm"]):
        if name == "ensemble":
            plan[name] = name  # derived from the other attacks, per sample
            continue
        params = {}
        if "steps" in attack and "steps" in inspect.signature(ATTACKS.get(name)).parameters:
            params["steps"] = attack["steps"]
        plan[name] = build_attack(name, **params)
    return plan


def headline_budgets(attack: dict[str, Any], data) -> list[float]:
    """The eps of the headline suite: the preset's `attack.headline_eps`, else the data set's
    standard budgets (by image shape: MNIST 0.1 and 0.3, CIFAR 2/255 and 8/255)."""
    from sgtlab.data.budgets import budgets_for_shape

    return attack.get("headline_eps") or budgets_for_shape(tuple(data.x.shape[1:])).headline_eps


def robustness_stage(model, cfg, attack: dict[str, Any], folder: Path, progress: bool,
                     times: dict[str, float]) -> dict[str, Any]:
    """Clean and robust accuracy over the eps grid, then at each headline eps the headline suite
    (`sgtlab.evaluate.headline_suite`: PGD with restarts and Square, AutoAttack-standard where the
    preset asks) on every image of the subset that no cheaper attack fooled there, folded into the
    ensemble: the headline is per image the worst case over the same attacks for every image
    (`attack.suite`; `false` leaves it out). The gradient-masking checks run on a class-stratified
    subset of `checks.n` images of the subset (`checks_subset`); their verdicts go to `checks.json`,
    their attacks stay out of the headline. `robustness.json` is written last: it marks the whole
    stage done."""
    import torch

    from sgtlab.data.subsets import indices_hash
    from sgtlab.evaluate.headline_suite import check_suite, headline_suite, suite_eps
    from sgtlab.evaluate.masking_checks import gradient_masking_checks
    from sgtlab.evaluate.robustness import robustness_sweep

    path, checks_path = folder / "robustness.json", folder / "checks.json"
    seed_subset = attack.get("subset_seed", 0)
    checks = attack.get("checks", False)
    times.update(attack=0.0, suite=0.0, checks=0.0)
    computed = not path.exists()
    if computed:
        t0 = time.perf_counter()
        data, idx = test_data(cfg, attack.get("n"), seed_subset)
        result = robustness_sweep(model, data, attack_plan(attack), attack.get("eps", []), seed=cfg.seed,
                                  progress=progress, from_scratch=attack.get("from_scratch", False),
                                  autocast=attack.get("autocast"), cuda_graphs=attack.get("cuda_graphs", False))
        result.sample_ids = torch.as_tensor(idx, dtype=torch.long)
        result.info.update(test_subset={"seed": seed_subset, "n": len(idx), "hash": indices_hash(idx),
                                        "stratified": True})
        times["attack"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        suite = check_suite(attack.get("suite", True))
        if suite or attack.get("autoattack"):
            opts = {"restarts": 0, "square_queries": 0, **(suite or {})}
            opts.setdefault("steps", attack.get("steps", 10))
            headline_suite(model, data, result, suite_eps(result.eps, headline_budgets(attack, data)),
                           autoattack=bool(attack.get("autoattack")), seed=cfg.seed, progress=progress, **opts)
        times["suite"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if checks:
            kw = dict(checks) if isinstance(checks, dict) else {}
            sub, at = checks_subset(data, kw.pop("n", CHECKS_N), seed_subset)
            write_json_atomic(checks_path, gradient_masking_checks(model, sub, n=None, seed=cfg.seed,
                                                                   progress=progress, **kw))
            result.info["checks_subset"] = {"n": len(at), "hash": indices_hash(idx[at]), "stratified": True}
        times["checks"] = time.perf_counter() - t0
        result.info["seconds"] = {k: round(times[k], 2) for k in STAGE_KEYS}
        result.save(folder)
    stored = read_json(path)
    if not computed:  # a resumed run: the seconds the earlier command spent on this stage
        times.update(stored_seconds(stored, STAGE_KEYS))
    cols = {"clean_accuracy": stored["clean_accuracy"], "n_test": stored["n"],
            "test_subset": stored.get("test_subset", {}).get("hash"),
            "sweep": "from-scratch" if stored.get("from_scratch") else "nested", **robustness_columns(stored)}
    if checks:
        cols.update(checks_columns(read_json(checks_path)))  # None: the check could not run (said in checks.json)
    return cols


STAGE_KEYS = ("attack", "suite", "checks")  # the robustness stage's timed parts, kept in robustness.json
CHECKS_N = 500  # images of the gradient-masking checks when `attack.checks` does not say (their default)


def checks_subset(data, m: int | None, seed: int = 0):
    """The gradient-masking checks' images: a seeded class-stratified subset of m images of the
    attack subset `data` (whose first images are not stratified), and their positions in it."""
    from sgtlab.data.subsets import stratified_subset

    return stratified_subset(data, m, seed)


def interpretability_stage(model, cfg, explain: dict[str, Any], attack: dict[str, Any], folder: Path,
                            progress: bool, times: dict[str, float]) -> dict[str, Any]:
    """Saliency-quality metrics per saliency method -> flat columns (`sal:METHOD:METRIC`); the
    full result (per-image values, curves, example maps) stays in `interpretability.json`, with
    the stage's seconds (`times["explain"]`, read back when a resumed run finds the file)."""
    from sgtlab.evaluate.interpretability import interpretability_metrics

    times["explain"] = 0.0
    if not explain.get("methods"):
        return {}
    path = folder / "interpretability.json"
    if path.exists():
        stored = read_json(path)
        times.update(stored_seconds(stored, ("explain",)))
    else:
        t0 = time.perf_counter()
        opts = {k: v for k, v in explain.items() if k not in EXPLAIN_OWN_KEYS}
        data, _ = test_data(cfg, explain.get("n"), attack.get("subset_seed", 0))
        stored = interpretability_metrics(model, data, explain["methods"], metrics=explain.get("metrics", "all"),
                                          n=None, seed=cfg.seed, progress=progress, **opts)
        times["explain"] = time.perf_counter() - t0
        stored["seconds"] = {"explain": round(times["explain"], 2)}
        write_json_atomic(path, stored)
    return saliency_columns(stored)


def stored_seconds(stored: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """The stage seconds a stage file holds (`"seconds": {key: s}`), where each is a finite number
    >= 0; 0 for a missing or malformed one (a file of an older sgtlab, or edited: a timing, not a
    result, so it never stops a run)."""
    secs = stored.get("seconds")
    secs = secs if isinstance(secs, dict) else {}
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0  # noqa: E731
    return {k: float(secs[k]) if ok(secs.get(k)) else 0.0 for k in keys}
