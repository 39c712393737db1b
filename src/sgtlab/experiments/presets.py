"""Experiment presets: small YAML files shipped in `presets/`, any value overridable with
`--set key.sub=value` (the value is read as YAML). A preset expands into one run per
(method entry, seed)."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sgtlab.errors import SgtlabError
from sgtlab.experiments.checks import check_experiment
from sgtlab.train import MethodConfig, TrainConfig
from sgtlab.train.resolve import check_method_options
from sgtlab.validate import MAX_YAML_CHARS, list_names, load_yaml, one_line

PRESET_DIR = "presets"
SECTIONS = {"description", "minutes_2cpu", "minutes_gpu", "measured", "dataset", "model", "seeds", "train", "methods",
            "attack", "explain", "name", "report"}


def preset_names() -> list[str]:
    files = resources.files("sgtlab.experiments").joinpath(PRESET_DIR).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (`quick`) or a path to a YAML file of the same form."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        from sgtlab.io import read_bytes_bounded

        try:  # a regular file only, read non-blocking and bounded: /dev/zero or a FIFO is refused, not read
            text, name = read_bytes_bounded(path, MAX_YAML_CHARS, "preset").decode("utf-8"), path.stem
        except (OSError, UnicodeDecodeError) as e:
            raise SgtlabError(f"preset {name_or_path}: cannot read it ({one_line(e)})") from None
    elif name_or_path in preset_names():
        text = resources.files("sgtlab.experiments").joinpath(PRESET_DIR, f"{name_or_path}.yaml").read_text()
        name = name_or_path
    else:
        raise SgtlabError(f"unknown preset {name_or_path!r}; choose one of: {', '.join(preset_names())} "
                          f"(or give a .yaml file)")
    cfg = load_yaml(text, f"preset {name_or_path}")  # plain data only; `1e-3` is a number
    if not isinstance(cfg, dict):
        raise SgtlabError(f"preset {name_or_path}: expected a mapping at the top level")
    cfg.setdefault("name", name)
    check_sections(cfg, f"preset {name_or_path}")
    return cfg


def check_sections(cfg: dict[str, Any], where: str) -> None:
    """The sections that hold options are mappings (`--set train=null` would leave none)."""
    for key in ("train", "attack", "explain", "report"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise SgtlabError(f"{where}: {key} must be a mapping of options ({key}.NAME=VALUE), got {cfg[key]!r}"[:200])


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.epochs=1`, `seeds=[0]`, `attack.eps=[0.1,0.2]`, `methods.1.k=0.3`, `train.lr=1e-3`.

    A value is read as YAML as a person means it (`1e-3` is a number; text that is not YAML stays
    text); a key must lead through mappings and list indices that exist (mappings are created)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise SgtlabError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=1")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw, f"--set {key}")
        except SgtlabError as e:
            structured = raw.lstrip().startswith(("[", "{", "&", "*", "!"))
            if structured or "not valid YAML" not in str(e):
                raise  # meant as structured YAML: say what is wrong with it
            value = raw
        parts = key.strip().split(".")
        if parts[0] not in SECTIONS:
            raise SgtlabError(f"--set {key}: unknown preset key {parts[0]!r}; keys: {', '.join(sorted(SECTIONS))}")
        if any(not p for p in parts):
            raise SgtlabError(f"--set {key}: an empty part in the key; write e.g. train.epochs=1")
        node: Any = cfg
        for depth, p in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "the preset"
            if isinstance(node, list):
                if not re.fullmatch(r"\d{1,6}", p) or int(p) >= len(node):
                    raise SgtlabError(f"--set {key}: {p!r} is not an index of the {len(node)}-element list {where}")
                if last:
                    node[int(p)] = value
                else:
                    node = node[int(p)]
            elif isinstance(node, dict):
                if last:
                    node[p] = value
                else:
                    if node.get(p) is None:
                        node[p] = {}
                    node = node[p]
            else:
                raise SgtlabError(f"--set {key}: {where} is {node!r}, not a mapping or list; set {where} itself")
        check_sections(cfg, f"--set {key}")
    return cfg


@dataclass
class RunSpec:
    """One run: a method entry of the preset with one seed. Plain data, so it can travel to Ray."""

    name: str      # folder name, unique within the experiment
    label: str     # how the report names the method
    seed: int
    train: dict[str, Any]
    attack: dict[str, Any]
    explain: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's numbers (where the data lives and which device runs it
        do not): two specs with the same identity give the same results."""
        train = {k: v for k, v in self.train.items() if k not in ("device", "data_dir", "amp", "cuda_graphs")}
        if not train.get("random_labels", True):
            del train["random_labels"]  # added later with default off: runs made before keep their hash
        mc = train.get("method_cfg")
        if isinstance(mc, dict) and mc.get("eps_warmup", 1) == 0:  # added later; 0 is how runs made before trained
            train["method_cfg"] = {k: v for k, v in mc.items() if k != "eps_warmup"}  # so they keep their hash
        attack = {k: v for k, v in self.attack.items() if k != "cuda_graphs"}  # how it runs, not what
        return {"train": train, "attack": attack, "explain": self.explain}

    def config_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of `identity()`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two identities, with both values: ['train.method_cfg.k: 0.5 -> 0.3']."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def expand(cfg: dict[str, Any]) -> list[RunSpec]:
    """Validate a preset and expand it into runs (every impossible value is refused here, before work)."""
    check_experiment(cfg)  # types, ranges and names of every section, before anything else
    unknown = set(cfg) - SECTIONS
    if unknown:
        raise SgtlabError(f"unknown preset keys: {list_names(unknown)}")
    seeds = cfg.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise SgtlabError(f"seeds must be a list of integers, got {seeds!r}")
    _check_eval(cfg)
    attack, explain = resolve_eval(cfg)
    method_fields = {f.name for f in dataclasses.fields(MethodConfig)}
    runs, names = [], set()
    for entry in cfg.get("methods") or []:
        entry = dict(entry)
        label = entry.pop("label", None) or entry.get("method", "?")
        train = dict(cfg.get("train") or {})
        train.update(dataset=cfg["dataset"], model=cfg.get("model"), method=entry.pop("method", "st"))
        mcfg = {k: entry.pop(k) for k in list(entry) if k in method_fields}
        try:  # {method: st, k: 0.3}: refused, naming the options st reads
            check_method_options(train["method"], mcfg)
        except SgtlabError as e:
            raise SgtlabError(f"methods entry {label!r}: {e}") from None
        train.update(entry)  # remaining keys override training options for this method only
        for seed in seeds:
            tc = resolve_train(TrainConfig.from_dict({**train, "seed": seed, "method_cfg": mcfg}).validate(), set(mcfg))
            name = f"{_slug(label)}-seed{seed}"
            if name in names:
                raise SgtlabError(f"two method entries are both labelled {label!r}; give them distinct labels")
            names.add(name)
            runs.append(RunSpec(name, label, seed, tc.to_dict(), attack, explain))
    if not runs:
        raise SgtlabError("the preset lists no methods")
    # seed-major order: an experiment stopped part-way has every method on the same first seeds,
    # so its report compares like with like (a method-major order would leave only the first method)
    order = {s: i for i, s in enumerate(seeds)}
    return sorted(runs, key=lambda r: order[r.seed])  # stable: methods keep their preset order


def resolve_train(tc: TrainConfig, given: set[str] | None = None) -> TrainConfig:
    """The values a run will really use, written out (config.json and the run's identity then say
    `k: 0.5`, not `k: null`): the one resolver `sgtlab.train.resolve.resolve_train` that `train` and
    `fit` use too (the data set's default model, the method's default k, the data set's training eps
    unless the entry set `train_eps`, PGD's and FGSM's step sizes)."""
    from sgtlab.train.resolve import resolve_train as resolve

    return resolve(tc, given)


def resolve_eval(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attack and explain sections with the data set's budgets filled in where not given:
    `attack.eps` (the standard grid), `attack.headline_eps`, the checks' eps, `explain.eps` (the
    low-saliency curve's budget), the test-subset seed (`subset_seed`, 0) and the headline suite
    (`attack.suite`, its options with the defaults filled in, or false)."""
    from sgtlab.data.budgets import budgets
    from sgtlab.evaluate.headline_suite import check_suite

    b = budgets(cfg["dataset"])
    attack = copy.deepcopy(dict(cfg.get("attack") or {}))
    explain = copy.deepcopy(dict(cfg.get("explain") or {}))
    attack.setdefault("eps", list(b.eps_grid))
    attack.setdefault("headline_eps", list(b.headline_eps))
    attack.setdefault("subset_seed", 0)
    # the headline suite, written out (on by default), so the run's identity says what it ran
    attack["suite"] = check_suite(attack.get("suite", True)) or False
    checks = attack.get("checks")
    if checks:
        checks = dict(checks) if isinstance(checks, dict) else {}
        checks.setdefault("eps", b.headline_eps[-1])
        attack["checks"] = checks
    if explain.get("methods"):
        explain.setdefault("eps", b.low_saliency_eps)
    return attack, explain


def _check_eval(cfg: dict[str, Any]) -> None:
    attack = cfg.get("attack") or {}
    eps = attack.get("eps", [])
    if any((not isinstance(e, (int, float))) or e < 0 for e in eps):
        raise SgtlabError(f"attack.eps must be numbers >= 0, got {eps}")
    for section in ("attack", "explain"):
        n = (cfg.get(section) or {}).get("n")
        if n is not None and (not isinstance(n, int) or n < 1):
            raise SgtlabError(f"{section}.n must be a positive integer, got {n!r}")
    steps = attack.get("steps", 10)
    if not isinstance(steps, int) or steps < 1:
        raise SgtlabError(f"attack.steps must be >= 1, got {steps!r}")


def describe(name: str) -> str:
    cfg = load_preset(name)
    n_runs = len(cfg.get("methods") or []) * len(cfg.get("seeds") or [0])
    if cfg.get("measured"):  # a figure measured on a named machine (end to end, or by --estimate)
        return f"{name}: {cfg.get('description', '')} [{n_runs} runs; {cfg['measured']}]"
    times = []
    if cfg.get("minutes_2cpu"):
        m = cfg["minutes_2cpu"]
        times.append(f"~{m} min on 2 CPU cores" if m < 120 else f"~{m / 60:.0f} h on 2 CPU cores")
    if cfg.get("minutes_gpu"):
        times.append(f"~{cfg['minutes_gpu'] / 60:.0f} h on one GPU")
    return f"{name}: {cfg.get('description', '')} [{n_runs} runs; {', '.join(times)}]"
