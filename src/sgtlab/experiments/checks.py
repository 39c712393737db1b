"""Validation of a whole experiment (a preset after its `--set` overrides) before the first run:
every section's type, every name (data set, methods, attacks, saliency methods, metrics, option
keys) and every number's range, so a typo fails in a second, not after hours of training.
Per-run training options are checked by `TrainConfig.validate` when `expand` builds the runs."""
from __future__ import annotations

import inspect
import re
from typing import Any

from sgtlab.errors import SgtlabError
from sgtlab.validate import MAX_GRID, SEED_LIMIT, check_number, check_plain, check_seed, list_names

MAX_RUNS = 1000         # method entries x seeds
MAX_IMAGES = 10_000_000  # attack.n / explain.n
NAME = re.compile(r"[^/\\\x00.][^/\\\x00]{0,99}")  # the default folder is results/NAME: one plain folder name
ATTACK_KEYS = {"attacks", "eps", "n", "steps", "checks", "headline_eps", "subset_seed", "from_scratch", "autoattack",
               "autocast", "cuda_graphs", "suite"}
# explain keys the experiment reads itself; the others are `saliency_quality` options
EXPLAIN_OWN_KEYS = ("methods", "metrics", "n", "label_sanity")


def _entry_label(entry: dict) -> str:
    return entry.get("label") or entry.get("method", "?")  # as `presets.expand` names runs


def _training(entry: dict) -> dict:
    """What an entry trains with, but for its label and the labels' randomisation."""
    return {"method": "st", **{k: v for k, v in entry.items() if k not in ("label", "random_labels")}}


def label_sanity_pair(cfg: dict[str, Any]) -> tuple[str, str] | None:
    """(label of the random-label entry, label of the entry training the same on true labels), or
    None when the preset does not ask for the check. Refuses, in one line, a name that is no entry's
    label, an entry that does not set `random_labels: true`, one with no true-label twin, and an
    explain section without saliency methods."""
    explain = cfg.get("explain") or {}
    name = explain.get("label_sanity") if isinstance(explain, dict) else None
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise SgtlabError(f"explain.label_sanity must be the label of a method entry, got {name!r}"[:300])
    if not explain.get("methods"):
        raise SgtlabError("explain.label_sanity needs saliency methods to compare: set explain.methods")
    entries = [e for e in cfg.get("methods") or [] if isinstance(e, dict)]
    rnd = next((e for e in entries if _entry_label(e) == name), None)
    if rnd is None:
        labels = ", ".join(_entry_label(e) for e in entries)
        raise SgtlabError(f"explain.label_sanity names {name!r}, but no method entry is labelled so; labels: {labels}"
                          [:300])
    if rnd.get("random_labels") is not True:
        raise SgtlabError(f"explain.label_sanity names {name!r}, which does not train on random labels: add "
                          f"random_labels: true to that entry"[:300])
    twin = next((e for e in entries if e is not rnd and not e.get("random_labels") and _training(e) == _training(rnd)),
                None)
    if twin is None:
        raise SgtlabError(f"explain.label_sanity: no method entry trains as {name!r} does on the true labels (the same "
                          f"entry without random_labels) to compare it with"[:300])
    return name, _entry_label(twin)


def check_experiment(cfg: Any) -> None:
    check_plain(cfg, "the preset")
    if not isinstance(cfg, dict):
        raise SgtlabError(f"a preset is a mapping of sections, got {type(cfg).__name__}")
    if "name" in cfg and not (isinstance(cfg["name"], str) and NAME.fullmatch(cfg["name"])):
        raise SgtlabError(f"name {cfg['name']!r}"[:120] + " must be a folder name of 1-100 characters without '/' "
                          "and not starting with '.' (it names the folder results/NAME)")
    _kind(cfg, "description", str)
    for key in ("minutes_2cpu", "minutes_gpu"):
        if cfg.get(key) is not None:
            check_number(cfg[key], key, lo=0)
    if not isinstance(cfg.get("dataset"), str):
        raise SgtlabError(f"the preset needs `dataset: NAME` (a data set name), got {cfg.get('dataset')!r}; "
                          f"e.g. --set dataset=mnist5k")
    _kind(cfg, "model", str)
    _kind(cfg, "train", dict)
    seeds = cfg.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not seeds:
        raise SgtlabError(f"seeds must be a list of integers, e.g. [0, 1], got {seeds!r}")
    for s in seeds:
        check_seed(s, f"seeds must be integers in 0..{SEED_LIMIT}: each seed")
    if len(set(seeds)) < len(seeds):
        raise SgtlabError(f"seeds {seeds} repeat a seed; each seed is one run")
    methods = cfg.get("methods")
    if not isinstance(methods, list) or not methods:
        raise SgtlabError(f"methods must be a non-empty list of entries like {{method: sgt, k: 0.5}}, got {methods!r}"
                          [:300])
    for i, entry in enumerate(methods):
        if not isinstance(entry, dict) or not isinstance(entry.get("method", "st"), str):
            raise SgtlabError(f"methods.{i} must be a mapping like {{method: sgt, k: 0.5}}, got {entry!r}"[:300])
        if not isinstance(entry.get("label", ""), str):
            raise SgtlabError(f"methods.{i}.label must be a string, got {entry['label']!r}")
    if len(methods) * len(seeds) > MAX_RUNS:
        raise SgtlabError(f"{len(methods)} methods x {len(seeds)} seeds is more than {MAX_RUNS} runs (the limit)")
    _check_attack(cfg.get("attack"))
    _check_explain(cfg.get("explain"))
    _check_report(cfg.get("report"), methods)
    label_sanity_pair(cfg)  # explain.label_sanity names a random-label entry with a true-label twin


REPORT_KEYS = {"compare", "min_seeds", "margin"}


def _check_report(report: Any, methods: list) -> None:
    """`report: {compare: [A:B, ...] or BASELINE, min_seeds: 5, margin: 2}` (see `sgtlab report --help`)."""
    if report is None:
        return
    if not isinstance(report, dict):
        raise SgtlabError(f"report must be a mapping like {{compare: [A:B], min_seeds: 5}}, got {report!r}"[:300])
    _known(report, REPORT_KEYS, "report")  # compare holds labels: not _options, whose values are numbers
    if report.get("min_seeds") is not None:
        check_number(report["min_seeds"], "report.min_seeds", lo=2, integer=True)
    if report.get("margin") is not None:
        check_number(report["margin"], "report.margin (pp)", lo=0, hi=100, lo_open=True)
    compare = report.get("compare")
    if compare is None:
        return
    items = [compare] if isinstance(compare, str) else compare
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise SgtlabError(f"report.compare must be 'A:B' strings or one baseline label, got {compare!r}"[:300])
    labels = {m.get("label") or m.get("method", "st") for m in methods if isinstance(m, dict)}
    for item in items:
        for x in (item.split(":", 1) if ":" in item else [item]):
            if x not in labels:
                raise SgtlabError(f"report.compare: {x!r} is not a method label of this preset; labels: "
                                  f"{', '.join(sorted(map(str, labels)))}"[:300])


def _kind(cfg: dict, key: str, kind: type) -> None:
    if cfg.get(key) is not None and not isinstance(cfg[key], kind):
        want = {str: "a string", dict: "a mapping"}[kind]
        raise SgtlabError(f"{key} must be {want}, got {cfg[key]!r}"[:300])


def _grid(value: Any, where: str, hi: float | None = None) -> None:
    if not isinstance(value, list) or not value:
        raise SgtlabError(f"{where} must be a non-empty list of numbers, got {value!r}"[:300])
    if len(value) > MAX_GRID:
        raise SgtlabError(f"{where} has {len(value)} values; the limit is {MAX_GRID}")
    for v in value:
        check_number(v, f"each value of {where}", lo=0, hi=hi)


def _count(section: dict, key: str, where: str, hi: float = MAX_IMAGES) -> None:
    v = section.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise SgtlabError(f"{where} must be a positive integer, got {v!r}"[:300])
    if v is not None:
        check_number(v, where, integer=True, lo=1, hi=hi)


def _check_attack(attack: Any) -> None:
    from sgtlab.evaluate.headline_suite import check_suite
    from sgtlab.evaluate.masking_checks import gradient_masking_checks
    from sgtlab.evaluate.robustness import resolve_attacks

    if attack is None:
        return
    if not isinstance(attack, dict):
        raise SgtlabError(f"attack must be a mapping (attacks, eps, n, steps, checks), got {attack!r}"[:300])
    unknown = set(attack) - ATTACK_KEYS
    if unknown:
        raise SgtlabError(f"unknown attack options: {list_names(unknown)}; known: {', '.join(sorted(ATTACK_KEYS))}")
    names = attack.get("attacks", ["fgsm", "pgd", "mifgsm"])
    if not isinstance(names, list) or not names or not all(isinstance(a, str) for a in names):
        raise SgtlabError(f"attack.attacks must be a list of attack names, e.g. [fgsm, pgd], got {names!r}"[:300])
    resolve_attacks(names)  # unknown names -> the list of valid ones
    if any(a in ("apgd-ce", "apgd-dlr", "square") for a in names):
        from sgtlab.attacks.autoattack import require_pyautoattack

        require_pyautoattack()
    _grid(attack.get("eps"), "attack.eps", hi=1.0)  # pixel units: images are in [0, 1]
    _count(attack, "n", "attack.n")
    _count(attack, "steps", "attack.steps", hi=100_000)
    if attack.get("headline_eps") is not None:
        _grid(attack["headline_eps"], "attack.headline_eps", hi=1.0)
    if attack.get("subset_seed") is not None:
        check_number(attack["subset_seed"], "attack.subset_seed", lo=0, integer=True)
    if not isinstance(attack.get("from_scratch", False), bool):
        raise SgtlabError(f"attack.from_scratch must be true or false, got {attack['from_scratch']!r}"[:300])
    if attack.get("autocast") not in (None, "bf16"):
        raise SgtlabError(f"attack.autocast must be bf16 (or left out for float32), got {attack['autocast']!r}"[:300])
    if not isinstance(attack.get("cuda_graphs", False), bool):
        raise SgtlabError(f"attack.cuda_graphs must be true or false, got {attack['cuda_graphs']!r}"[:300])
    suite = check_suite(attack.get("suite", True))  # one-line errors
    if suite and suite["square_queries"]:
        from sgtlab.attacks.autoattack import require_pyautoattack

        require_pyautoattack("square")
    aa = attack.get("autoattack", False)
    if isinstance(aa, dict) and "n" in aa:
        raise SgtlabError("attack.autoattack.n is gone: AutoAttack runs in the headline suite on every image of the "
                          "subset no cheaper attack fooled (attack.n sizes the subset); write attack.autoattack: true")
    if not isinstance(aa, bool):
        raise SgtlabError(f"attack.autoattack must be true or false, got {aa!r}"[:300])
    if aa:
        from sgtlab.attacks.autoattack import require_pyautoattack

        require_pyautoattack()
    checks = attack.get("checks", False)
    if isinstance(checks, dict):
        allowed = set(inspect.signature(gradient_masking_checks).parameters) - {"model", "data", "progress", "seed",
                                                                                 "outcomes"}
        _options(checks, allowed, "attack.checks")
    elif not isinstance(checks, bool):
        raise SgtlabError(f"attack.checks must be true, false or a mapping of options, got {checks!r}"[:300])


def _check_explain(explain: Any) -> None:
    from sgtlab.evaluate.interpretability import METRICS, saliency_quality
    from sgtlab.explain import SALIENCY
    from sgtlab.explain.base import _check_options

    if explain is None:
        return
    if not isinstance(explain, dict):
        raise SgtlabError(f"explain must be a mapping (methods, metrics, n, ...), got {explain!r}"[:300])
    # interpretability_metrics(model, data, methods, metrics, n, **options) passes options to saliency_quality
    allowed = (set(inspect.signature(saliency_quality).parameters) - {"model", "x", "y", "regions", "seed",
                                                                       "progress"}) | set(EXPLAIN_OWN_KEYS)
    unknown = set(explain) - allowed
    if unknown:
        raise SgtlabError(f"unknown explain options: {list_names(unknown)}; known: {', '.join(sorted(allowed))}")
    methods = explain.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise SgtlabError(f"explain.methods must be a list of saliency methods, got {methods!r}"[:300])
    for m in methods:
        SALIENCY.get(m)
    metrics = explain.get("metrics", "all")
    if metrics != "all":
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise SgtlabError(f"explain.metrics must be 'all' or a list of metric names, got {metrics!r}"[:300])
        for m in metrics:
            if m not in METRICS:
                raise SgtlabError(f"unknown metric {m!r} in explain.metrics; choose from: {', '.join(METRICS)}")
    _count(explain, "n", "explain.n")
    for key in ("aopc_patch", "aopc_steps", "pgd_steps", "batch_size", "n_examples", "pgd_n", "road_n", "sanity_n",
                "captum_n", "captum_perturb"):
        _count(explain, key, f"explain.{key}", hi=1_000_000)
    if explain.get("sanity_n") == 1:
        raise SgtlabError("explain.sanity_n must be >= 2 (an interval needs two images)")
    if explain.get("target", "true") not in ("true", "pred"):
        raise SgtlabError(f"explain.target must be 'true' (the label) or 'pred' (the prediction), got "
                          f"{explain['target']!r}"[:300])
    for key in ("road_noise", "sanity_threshold"):
        if explain.get(key) is not None:
            check_number(explain[key], f"explain.{key}", lo=0, hi=1.0)
    if explain.get("road_fractions") is not None:
        _grid(explain["road_fractions"], "explain.road_fractions", hi=0.99)
    if explain.get("eps") is not None:
        check_number(explain["eps"], "explain.eps", lo=0, hi=1.0)
    if not isinstance(explain.get("pgd", True), bool):
        raise SgtlabError(f"explain.pgd must be true or false, got {explain['pgd']!r}")
    for key in ("masked_ps", "qs", "pgd_qs"):
        if explain.get(key) is not None:
            _grid(explain[key], f"explain.{key}", hi=1.0)
    opts = explain.get("method_options") or {}
    if not isinstance(opts, dict):
        raise SgtlabError(f"explain.method_options must map a saliency method to its options, got {opts!r}"[:300])
    for m, o in opts.items():
        if not isinstance(o, dict):
            raise SgtlabError(f"explain.method_options.{m} must be a mapping of options, got {o!r}"[:300])
        odd = [k for k in o if not re.fullmatch(r"\w+", k)]
        if odd:
            raise SgtlabError(f"explain.method_options.{m}: no option is named {list_names(odd)}")
        _check_options(m, SALIENCY.get(m), o)  # option names the method takes
        for k, v in o.items():
            check_number(v, f"explain.method_options.{m}.{k}", lo=0)


def _known(opts: dict, allowed: set[str], where: str) -> None:
    unknown = set(opts) - allowed
    if unknown:
        raise SgtlabError(f"unknown {where} options: {list_names(unknown)}; known: {', '.join(sorted(allowed))}")


def _options(opts: dict, allowed: set[str], where: str) -> None:
    """Known keys with numeric values (>= 0)."""
    _known(opts, allowed, where)
    for k, v in opts.items():
        if v is not None:
            check_number(v, f"{where}.{k}", lo=0)
