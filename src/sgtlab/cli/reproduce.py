"""`sgtlab reproduce`: run a preset experiment end to end and write its report."""
from __future__ import annotations

import argparse

from sgtlab.cli.options import add_verify_option
from sgtlab.experiments.presets import apply_overrides, describe, expand, load_preset, preset_names


def add_parser(sub):
    presets = "\n".join("  " + describe(n) for n in preset_names())
    p = sub.add_parser(
        "reproduce", help="run a preset experiment (train, attack, explain every method x seed) and report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the papers' experiments: every (method, seed) of a preset is one run folder under "
                    "OUT/runs/ (config, checkpoint, metrics, robustness and saliency results). Finished runs "
                    "are skipped and half-done ones resume, so after a crash or Ctrl-C run the same command "
                    "again. Ends with OUT/report/report.html.\n\npresets:\n" + presets,
        epilog="examples:\n  sgtlab reproduce                      # preset quick into results/quick\n"
               "  sgtlab reproduce --preset paper-mnist --data-dir ~/data\n"
               "  sgtlab reproduce --set train.epochs=1 --set seeds=[0] --set attack.n=200\n"
               "  sgtlab reproduce --preset quick --dry-run")
    p.add_argument("--preset", default="quick", help="preset name or a YAML file of the same form (default: quick)")
    p.add_argument("--out", default=None, help="experiment folder (default: results/PRESET)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. train.epochs=1, seeds=[0,1], attack.n=200, methods.1.k=0.3 "
                        "(repeatable; values are YAML)")
    p.add_argument("--seeds", default=None, help="shortcut for --set seeds=[...]: e.g. 0,1,2")
    p.add_argument("--data-dir", default=None, help="folder of the data files (default: $SGTLAB_DATA)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="device of every run")
    add_verify_option(p)
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="run the runs on this machine (local; see --workers) or as Ray tasks (needs sgtlab[ray])")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", default="auto",
                   help="runs at once, each in its own process (an equal share of the CPU threads); 'auto': on a "
                        "CPU one per core (at most 8); on CUDA as many per GPU as its free memory holds (measured "
                        "peak of the preset's hungriest method), spread over all GPUs, at most one per CPU core; "
                        "with Ray it sets the GPU fraction per task (default: auto)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and whether each is done, with the measured time estimate, then stop")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training steps of each method and the evaluation on a slice of the test set "
                        "on this machine, print the projected time of every run and of the whole experiment "
                        "for --workers, then stop (also part of --dry-run)")
    p.add_argument("--from-scratch", action="store_true",
                   help="attack each eps on its own, as the papers do (same as --set attack.from_scratch=true; "
                        "default: the faster nested sweep, whose accuracy at eps is the best over every eps' <= eps)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def build_config(args) -> dict:
    overrides = list(args.overrides)
    if args.seeds:
        overrides.append(f"seeds=[{args.seeds}]")
    if args.data_dir:
        overrides.append(f"train.data_dir={args.data_dir}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if not getattr(args, "verify", True):
        overrides.append("train.verify=false")
    return apply_overrides(load_preset(args.preset), overrides)


def parse_workers(value: str, device: str | None) -> int:
    from sgtlab.errors import SgtlabError
    from sgtlab.experiments.executors import default_workers

    if value == "auto":
        return default_workers(device)
    try:
        n = int(value)
    except ValueError:
        raise SgtlabError(f"--workers takes a number or 'auto', got {value!r}") from None
    if n < 1:
        raise SgtlabError(f"--workers must be >= 1, got {n}")
    return n


def _gpu_plan(workers: str, cfg: dict, specs) -> list[int] | None:
    """On CUDA (when the runs would use it) the GPU of every worker slot; None on a CPU."""
    from sgtlab.experiments.executors import gpu_slots

    if cfg.get("train", {}).get("device", "auto") == "cpu":
        return None
    return gpu_slots(workers, [s.train for s in specs])


def run(args) -> int:
    from pathlib import Path

    from sgtlab.experiments.runner import is_complete, run_experiment

    cfg = build_config(args)
    if args.from_scratch:
        cfg.setdefault("attack", {})["from_scratch"] = True
    specs = expand(cfg)  # validates everything before any work
    workers = parse_workers(args.workers, cfg.get("train", {}).get("device"))
    out = Path(args.out or Path("results") / cfg["name"])
    if args.dry_run:
        for s in specs:
            state = "done" if is_complete(out, s.name) else "to do"
            t = s.train
            print(f"{s.name:28s} {state:6s} {t['method']:8s} seed {s.seed}  {t['dataset']}/{t['model']}  "
                  f"{t['epochs']} epochs")
        print(f"{len(specs)} runs into {out}")
    todo = [s for s in specs if not is_complete(out, s.name)]
    gpus = _gpu_plan(args.workers, cfg, todo) if todo else None
    if gpus:
        workers = len(gpus)
        print(f"{len(gpus)} run(s) at once on {len(set(gpus))} GPU(s): " + ", ".join(
            f"GPU {g}: {gpus.count(g)}" for g in sorted(set(gpus))))
    if args.dry_run or args.estimate:
        from sgtlab.experiments.estimate import estimate_experiment, format_estimate

        if todo:
            est = estimate_experiment(cfg, workers=workers, device=args.device, names=[s.name for s in todo])
            print(format_estimate(est))
        else:
            print("every run is done")
        return 0
    from sgtlab.io import folder_lock

    # one lock over the runs and the report (the runner does not build it): no second command
    # slips in between; taken before the report's heavy imports (matplotlib, scipy)
    with folder_lock(out, "experiment folder"):
        run_experiment(cfg, out, executor=args.executor, address=args.address, progress=args.progress,
                       workers=workers, gpus=gpus, lock=False, on_run=None if args.progress else RunLog())
        from sgtlab.reporting import build_report

        path = build_report(out)
    print(f"report: {path}")
    return 0


class RunLog:
    """Without progress bars (`--no-progress`, e.g. a background run with its output in a file), one
    line per finished run: how far, the run's time and clean accuracy, and the time left at the pace
    of the runs finished by this command."""

    def __init__(self):
        import time

        self.clock, self.start, self.first = time.monotonic, time.monotonic(), None

    def __call__(self, row: dict, done: int, total: int) -> None:
        import sys

        if self.first is None:
            self.first = done - 1  # runs finished before this command
        here, elapsed = done - self.first, self.clock() - self.start
        left = f"; about {elapsed / here * (total - done) / 60:.0f} min left" if done < total else "; all done"
        secs, acc = row.get("seconds"), row.get("clean_accuracy")
        took = f" in {secs / 60:.1f} min" if isinstance(secs, (int, float)) else ""
        clean = f", clean {100 * acc:.1f} %" if isinstance(acc, (int, float)) else ""
        print(f"[{done}/{total}] {row.get('run', '?')} finished{took}{clean}{left}", file=sys.stderr, flush=True)


def resume_argv(argv: list[str]) -> list[str]:
    """Finished runs are skipped and half-done ones resume: the same command continues."""
    return argv
