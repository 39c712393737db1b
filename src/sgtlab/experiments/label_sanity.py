"""The label-randomisation sanity check of an experiment (Adebayo et al. 2018, "data randomization
test"), where a preset asks for it: `explain.label_sanity: LABEL` names a method entry that sets
`random_labels: true`; the entry that is the same but for its label and `random_labels` trains the
real model. Once both runs of a seed are complete, `label_sanity_stage` loads both checkpoints and
compares their maps (`sanity_checks.label_randomization_check`) on the first `explain.sanity_n`
images of the experiment's test subset, for every saliency method of `explain.methods`; the result
goes into the random-label run's folder (`label_sanity.json`), which the report reads. The preset's
request is checked with the rest of the experiment (`checks.label_sanity_pair`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sgtlab.experiments.checks import label_sanity_pair
from sgtlab.experiments.presets import expand
from sgtlab.experiments.store import is_complete, run_dir
from sgtlab.io import read_json, write_json_atomic

RESULT = "label_sanity.json"


def label_sanity_run(real_folder: Path, random_folder: Path, train: dict[str, Any], explain: dict[str, Any],
                     seed: int, subset_seed: int = 0) -> dict[str, Any]:
    """`label_randomization_check` of two trained runs (`train`: the real run's training options)
    on the first `explain.sanity_n` (default 64) images of the experiment's test subset, each map
    explaining the class the real model's report explains (`explain.target`), SmoothGrad's noise
    from `seed` for both models."""
    from sgtlab.device import eval_batch_size, resolve_device
    from sgtlab.evaluate.interpretability import seeded_explainer
    from sgtlab.evaluate.perturb import explained_class, model_device
    from sgtlab.evaluate.sanity_checks import label_randomization_check
    from sgtlab.experiments.stages import test_data
    from sgtlab.train import TrainConfig
    from sgtlab.train.checkpoint import load_model

    cfg = TrainConfig.from_dict(train)
    model, _ = load_model(real_folder, resolve_device(cfg.device))
    random_model, _ = load_model(random_folder, resolve_device(cfg.device))
    data, _ = test_data(cfg, explain.get("n"), subset_seed)
    k = min(int(explain.get("sanity_n") or 64), len(data))
    dev = model_device(model)
    x, y = data.x[:k].to(dev), data.y[:k].to(dev)
    opts = explain.get("method_options") or {}
    explainers = {m: seeded_explainer(m, opts.get(m), seed) for m in explain["methods"]}
    cls = explained_class(model, x, y, explain.get("target", "true"), eval_batch_size(explain.get("batch_size"), dev))
    return label_randomization_check(model, random_model, x, cls, explainers,
                                     threshold=explain.get("sanity_threshold", 0.5))


def label_sanity_stage(cfg: dict[str, Any], root: str | Path) -> list[Path]:
    """For each seed whose random-label and real runs are both complete, the check into the random
    run's folder; skipped where it is there for the same real run (its config hash). Returns the
    files written."""
    pair = label_sanity_pair(cfg)
    if pair is None:
        return []
    specs = {(s.label, s.seed): s for s in expand(cfg)}
    written = []
    for (label, seed), rnd in specs.items():
        real = specs.get((pair[1], seed))
        if label != pair[0] or real is None or not (is_complete(root, rnd.name) and is_complete(root, real.name)):
            continue
        out = run_dir(Path(root), rnd.name) / RESULT
        if out.exists() and read_json(out).get("real_config_hash") == real.config_hash():
            continue
        res = label_sanity_run(run_dir(Path(root), real.name), run_dir(Path(root), rnd.name), real.train, rnd.explain,
                               seed, rnd.attack.get("subset_seed", 0))
        write_json_atomic(out, {"real": pair[1], "random": pair[0], "seed": seed,
                                "real_config_hash": real.config_hash(), **res})
        written.append(out)
    return written
