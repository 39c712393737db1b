"""The experiment runner: each (method entry, seed) is one run in `OUT/runs/NAME/`.

A run has three stages, each skipped when its output exists: training (resumed from its last
checkpoint), the robustness evaluation (`robustness.json`) and the saliency evaluation
(`interpretability.json`), the last two in `stages.py`; `result.json` marks the run complete. So
starting `reproduce` again after a crash or Ctrl-C finishes the job without redoing work. Finished runs' rows go into
`OUT/results.csv`, rewritten atomically and keyed by run name, so it holds each run exactly once.

A run's identity is the hash of its resolved configuration (training with every method option,
attack and explain sections; `run.json`). A run folder made with another configuration is never
reused: the runner refuses and says which options differ. Every run is evaluated on the same
seeded, class-stratified subset of the test split (`attack.subset_seed`), whose fingerprint goes
into the results, with the provenance (sgtlab, git commit, torch, device, threads, date, command).
The runner does not build the report: `sgtlab reproduce` and `sgtlab report` do.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from sgtlab.errors import SgtlabError
from sgtlab.experiments.presets import RunSpec, expand, identity_diff
from sgtlab.experiments.provenance import provenance
from sgtlab.experiments.stages import device, interpretability_stage, robustness_stage
from sgtlab.experiments.store import (EXPERIMENT, IDENTITY, RESULT, final_loss, is_complete, read_results,
                                     record_result, run_dir)
from sgtlab.io import folder_lock, read_json, write_json_atomic


def execute_run(spec: RunSpec | dict[str, Any], root: str | Path, progress: bool = False) -> dict[str, Any]:
    """Run (or finish) one run; return its flat result row. Idempotent."""
    from sgtlab.train import TrainConfig, fit
    from sgtlab.train.checkpoint import load_model

    if isinstance(spec, dict):
        spec = RunSpec(**spec)
    folder = run_dir(Path(root), spec.name)
    check_identity(folder, spec)
    if (folder / RESULT).exists():
        return read_json(folder / RESULT)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / IDENTITY, {"config_hash": spec.config_hash(), **spec.identity()})
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(spec.train)
    last = fit(cfg, folder, resume=True, progress=progress)
    model, meta = load_model(folder, device(cfg.device))
    row: dict[str, Any] = {"run": spec.name, "label": spec.label, "method": cfg.method, "seed": spec.seed,
                           "dataset": cfg.dataset, "model": meta["arch"]["model"], "epochs": cfg.epochs,
                           "train_subset": cfg.train_subset, "config_hash": spec.config_hash()}
    # a resumed run: the epochs an earlier command trained count too (their seconds are in the
    # metrics log; this command's own training time alone would be a fraction of the run's)
    trained_here = time.perf_counter() - t0
    earlier = max(0.0, _epoch_seconds(folder, cfg.epochs) - trained_here)
    times = {"train": trained_here + earlier}
    row.update(robustness_stage(model, cfg, spec.attack, folder, progress, times))
    row.update(interpretability_stage(model, cfg, spec.explain, spec.attack, folder, progress, times))
    row["train_test_accuracy"] = last.get("test_accuracy")
    # what an under-trained flag needs: the last epoch's training loss and the chance level ln(classes)
    row["final_loss"], row["num_classes"] = final_loss(last), meta["arch"]["num_classes"]
    row.update({f"seconds_{k}": round(v, 2) for k, v in times.items()})
    # the whole run: this command's time and the earlier epochs', or, where this command found stages
    # done, the stages' own seconds (read back from their files) when they add up to more
    row["seconds"] = round(max(time.perf_counter() - t0 + earlier, sum(times.values())), 2)
    row.update(provenance(device(cfg.device)))
    write_json_atomic(folder / RESULT, row)
    return row


def _epoch_seconds(folder: Path, epochs: int) -> float:
    """The training seconds of every epoch in the run's metrics log, whichever command trained it
    (0 where the log cannot be read: a timing, not a result)."""
    from sgtlab.train.loop import METRICS, read_metrics

    try:
        rows = read_metrics(folder / METRICS, epochs)
    except (OSError, ValueError):  # unreadable, or not UTF-8
        return 0.0
    secs = [r.get("seconds") for r in rows]
    return sum(s for s in secs if isinstance(s, (int, float)) and math.isfinite(s) and s > 0)


def check_identity(folder: Path, spec: RunSpec) -> None:
    """Refuse to reuse a run folder made with another configuration (naming what differs)."""
    path = folder / IDENTITY
    if path.exists():
        old = read_json(path)
        if old.get("config_hash") != spec.config_hash():
            diff = identity_diff({k: v for k, v in old.items() if k != "config_hash"}, spec.identity())
            raise SgtlabError(f"{folder} holds a run made with other options ({'; '.join(diff[:6]) or 'see run.json'})"
                              f"; its results are not reused: use another --out, give the method entry another "
                              f"label, or delete that run folder")
    elif (folder / RESULT).exists() or (folder / "checkpoint.safetensors").exists():
        raise SgtlabError(f"{folder} holds a run without {IDENTITY} (made by an older sgtlab), so its options "
                          f"cannot be checked; use another --out or delete that run folder")


# -- the whole experiment ---------------------------------------------------------------------------

def run_experiment(cfg: dict[str, Any], out: str | Path, executor: str = "local", address: str | None = None,
                   progress: bool = True, workers: int = 1, gpus: list[int] | None = None,
                   lock: bool = True, on_run: Callable[[dict[str, Any], int, int], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Run every (method, seed) of `cfg` not yet complete into `out` and record each row as it
    finishes (the report is built by the caller: `sgtlab.reporting.build_report(out)`). `workers`: runs
    at once with the local executor (in worker processes); `gpus`: on CUDA, the GPU of every worker
    slot (`executors.plan_gpu_workers`), several runs per GPU. The folder is locked meanwhile: a
    second command on it is refused at once, naming the holder (`lock=False`: the caller holds the
    lock, as `sgtlab reproduce` does over the runs and the report). `on_run(row, done, total)` is
    called as each run finishes (`done` counts the runs finished before this call too)."""
    expand(cfg)  # the whole experiment is valid before the folder is even created
    if not lock:
        return _run_experiment(cfg, out, executor, address, progress, workers, gpus, on_run)
    with folder_lock(out, "experiment folder"):
        return _run_experiment(cfg, out, executor, address, progress, workers, gpus, on_run)


def _run_experiment(cfg: dict[str, Any], out: str | Path, executor: str, address: str | None, progress: bool,
                    workers: int, gpus: list[int] | None = None, on_run=None) -> list[dict[str, Any]]:
    from sgtlab.experiments.executors import get_executor
    from sgtlab.experiments.label_sanity import label_sanity_stage

    specs = expand(cfg)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for s in specs:  # before any work: a changed option must not meet a finished run of the old one
        check_identity(run_dir(root, s.name), s)
    _check_same_experiment(root, cfg)
    order = [s.name for s in specs]
    # rows of runs finished before a crash but not yet in the table
    for s in specs:
        if is_complete(root, s.name):
            record_result(root, read_json(run_dir(root, s.name) / RESULT), order)
    pending = [s for s in specs if not is_complete(root, s.name)]
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), desc=f"{cfg.get('name', 'experiment')} runs",
               disable=not progress, unit="run")
    ex = (get_executor(executor, address=address, gpus=gpus) if executor != "local"
          else get_executor("local", workers=workers, gpus=gpus))
    done = len(specs) - len(pending)
    for row in ex.map(execute_run, [s.to_dict() for s in pending], str(root)):
        record_result(root, row, order)
        done += 1
        if on_run is not None:
            on_run(row, done, len(specs))
        bar.update(1)
        bar.set_postfix_str(f"{row['run']}: clean {row.get('clean_accuracy', float('nan')):.3f}")
    bar.close()
    label_sanity_stage(cfg, root)  # needs two finished runs of a seed, so after them all
    return read_results(root)


def _check_same_experiment(root: Path, cfg: dict[str, Any]) -> None:
    """Refuse to mix two different experiments in one folder. Adding seeds or method entries is
    fine (runs are independent); changing shared settings (data, training, evaluation) is not."""
    path = root / EXPERIMENT
    free = {"seeds", "methods", "description", "minutes_2cpu", "minutes_gpu", "measured", "report"}
    if path.exists():
        old = read_json(path)
        new = json.loads(json.dumps(cfg))
        changed = sorted(k for k in (set(old) | set(new)) - free if old.get(k) != new.get(k))
        if changed:
            raise SgtlabError(f"{root} holds another experiment (differs in: {', '.join(changed)}); "
                              f"use another --out, or the same preset and --set options")
    write_json_atomic(path, cfg)
