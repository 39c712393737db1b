"""`sgtlab attack`: robust accuracy of a checkpoint under a list of attacks over an eps grid."""
from __future__ import annotations

import json
import sys

from sgtlab.cli.options import DATASET_HELP, add_verify_option
from sgtlab.validate import int64


def add_parser(sub):
    p = sub.add_parser(
        "attack", help="robust accuracy under attacks over an eps grid; gradient-masking checks",
        description="Attack a trained model on test images with each attack at each eps (L-inf, pixel units), "
                    "print an attack x eps table of robust accuracy and write robustness.json and "
                    "robustness_per_sample.csv to --out.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder or a checkpoint.safetensors file")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help="folder of the data files (default: $SGTLAB_DATA)")
    add_verify_option(p)
    p.add_argument("--attacks", default="fgsm,pgd,mifgsm",
                   help="comma-separated attack names: fgsm, pgd, mifgsm, apgd-ce, apgd-dlr, square, ensemble "
                        "(ensemble = per-sample worst case over the others) (default: %(default)s)")
    p.add_argument("--eps", default=None, help="eps list '0.1,0.3' or '2/255,8/255', or range 'start:stop:step' "
                   "('1/255:8/255:1/255'; stop included) "
                                               "(default: the data set's standard grid, e.g. 0.05..0.4 for MNIST, "
                                               "1/255..16/255 for CIFAR-10)")
    p.add_argument("--n", type=int64, default=None,
                   help="attack N test images, a seeded class-stratified subset (default: all)")
    p.add_argument("--from-scratch", action="store_true",
                   help="attack each eps on its own, as the papers do (default: the faster nested sweep, whose "
                        "accuracy at eps is the best attack over every eps' <= eps)")
    p.add_argument("--autocast", choices=("bf16",), default=None,
                   help="run the attacks' passes under bfloat16 autocast (faster on GPUs and bf16 CPUs); the "
                        "verdict on each adversarial image stays float32 (docs/attacks.md: measured effect)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="on CUDA, replay the attacks' forwards and backwards as CUDA graphs (same numbers, fewer "
                        "launches; not yet measured on a GPU, so off by default)")
    p.add_argument("--batch-size", type=int64, default=None,
                   help="images per attack batch (default: 128 on a CPU, where larger batches leave the "
                        "caches and cost more per image; 1024 on a GPU)")
    p.add_argument("--seed", type=int64, default=0, help="seed of the random starts (default: %(default)s)")
    p.add_argument("--checks", action="store_true", help="also run the gradient-masking checks")
    p.add_argument("--suite", action="store_true",
                   help="also the headline suite that `reproduce` runs, at the data set's headline eps on the grid: "
                        "PGD from 5 more random starts and Square (300 queries) on every image no cheaper attack "
                        "fooled there, folded into the ensemble (docs/attacks.md)")
    p.add_argument("--out", default=None, help="folder for robustness.json, robustness_per_sample.csv and "
                                               "checks.json (default: RUN itself when RUN is a run folder, the "
                                               "layout `reproduce` writes and `report` reads; none otherwise)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a robustness.json of another evaluation (other images, attacks, eps or data) in "
                        "--out, or of a finished `reproduce` run (default: refused, the finished result is kept)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the robust accuracies to OUT/tensorboard (needs the tensorboard package)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def run(args) -> int:
    from pathlib import Path

    from sgtlab.attacks.autoattack import require_pyautoattack
    from sgtlab.cli.options import parse_float_list, parse_name_list
    from sgtlab.errors import SgtlabError
    from sgtlab.evaluate.robustness import check_eps_grid, resolve_attacks
    from sgtlab.validate import check_seed

    # every argument is checked before the model is loaded or any image attacked
    eps = check_eps_grid(parse_float_list(args.eps)) if args.eps is not None else None
    if eps is not None:
        from sgtlab.data.budgets import check_unit_eps

        check_unit_eps("--eps", eps)  # pixel units: 8 for 8/255 is refused
    check_seed(args.seed, "--seed")
    attacks = parse_name_list(args.attacks)
    resolve_attacks(attacks)  # unknown names -> error listing the valid ones
    if args.batch_size is not None and args.batch_size < 1:
        raise SgtlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if any(a in ("apgd-ce", "apgd-dlr", "square") for a in attacks):
        require_pyautoattack()
    if args.n is not None and args.n < 1:
        raise SgtlabError(f"--n must be >= 1, got {args.n}")
    from sgtlab.experiments.store import writable_run

    if args.out is None and Path(args.run).is_dir() and not writable_run(args.run) and not args.overwrite:
        raise SgtlabError(f"{args.run} is a finished run of `sgtlab reproduce`, whose robustness.json belongs to "
                          f"its experiment: pass --out for this attack's results")
    out = Path(args.out) if args.out else (Path(args.run) if Path(args.run).is_dir() else None)
    if out is None:
        return _attack(args, attacks, eps, None)
    from sgtlab.io import folder_lock

    with folder_lock(out, "run folder"):  # two commands on one run: the second is refused, not the last one wins
        return _attack(args, attacks, eps, out)


def _attack(args, attacks, eps, out) -> int:
    from sgtlab.attacks.base import check_inputs
    from sgtlab.cli.common import load_model_and_data
    from sgtlab.errors import SgtlabError
    from sgtlab.evaluate.masking_checks import gradient_masking_checks
    from sgtlab.evaluate.robustness import robustness_sweep
    from sgtlab.experiments.store import ROBUSTNESS, check_replace

    if out is not None and (out / "result.json").exists():  # a finished reproduce run: refused before any work
        check_replace(out, ROBUSTNESS, {}, lambda old: None, args.overwrite, "attack")
    if args.tensorboard:
        from sgtlab.tracking import require_tensorboard

        require_tensorboard()
        if out is None:
            raise SgtlabError("--tensorboard writes into the run folder: give a run folder or --out")
    model, meta, data = load_model_and_data(args.run, args.dataset, args.data_dir, None, args.device,
                                            verify=args.verify)
    if eps is None:  # the one budget resolver: the data set's name, else its kind
        from sgtlab.data.budgets import budgets_for

        eps = list(budgets_for(args.dataset or meta["arch"].get("dataset") or data.name, tuple(data.shape)).eps_grid)
    from sgtlab.data.subsets import indices_hash, stratified_subset

    data, idx = stratified_subset(data, args.n, seed=0)  # the same images as `reproduce` attacks
    check_inputs(data.x, data.y, eps[-1])
    from sgtlab.data.subsets import data_hash

    # what this evaluation is: a robustness.json of another one (or of data changed since) is kept
    request = {"dataset": data.name, "data": data_hash(data.x, data.y), "n": len(idx), "attacks": list(attacks),
               "eps": [float(e) for e in eps], "seed": args.seed, "from_scratch": bool(args.from_scratch),
               "suite": bool(args.suite)}
    if out is not None:
        check_replace(out, ROBUSTNESS, request, lambda old: old.get("request"), args.overwrite, "attack")
    progress = args.progress and not args.json and sys.stderr.isatty()
    result = robustness_sweep(model, data, attacks, eps, batch_size=args.batch_size, progress=progress,
                              seed=args.seed, from_scratch=args.from_scratch, autocast=args.autocast,
                              cuda_graphs=args.cuda_graphs)
    import torch

    result.sample_ids = torch.as_tensor(idx)
    result.info["test_subset"] = {"seed": 0, "n": len(idx), "hash": indices_hash(idx), "stratified": True}
    result.info["request"] = request
    if args.suite:
        from sgtlab.data.budgets import budgets
        from sgtlab.evaluate.headline_suite import SUITE_DEFAULTS, headline_suite, suite_eps

        headline = budgets(args.dataset or meta["arch"].get("dataset") or data.name).headline_eps
        headline_suite(model, data, result, suite_eps(result.eps, headline), batch_size=args.batch_size,
                       seed=args.seed, progress=progress, **SUITE_DEFAULTS)
    checks = None
    if args.checks:
        checks = gradient_masking_checks(model, data, n=None, batch_size=args.batch_size, seed=args.seed)
        result.info["checks"] = checks
    result.info.update(model=meta["arch"]["model"], dataset=data.name)
    files = result.save(out) if out is not None else {}
    if checks is not None and out is not None:
        from sgtlab.io import write_json_atomic

        files["checks"] = out / "checks.json"
        write_json_atomic(files["checks"], checks)
    if args.tensorboard:
        from sgtlab.tracking import Tracker

        tracker = Tracker(out)
        tracker.robustness(result.robust_accuracy, result.clean_accuracy)
        tracker.close()
    if args.json:
        obj = {"clean_accuracy": result.clean_accuracy, "n": result.n,
               "robust_accuracy": {a: {f"{e:g}": v for e, v in d.items()} for a, d in result.robust_accuracy.items()}}
        if checks is not None:
            obj["checks"] = checks
        if files:
            obj["files"] = {k: str(v) for k, v in files.items()}
        print(json.dumps(obj))
        return 0
    print(f"{data.name}, robust accuracy (%) under L-inf attacks")
    from sgtlab.reporting.eps import eps_text

    print(result.table(lambda e: eps_text(e, tuple(data.shape))))  # k/255 on colour images, 0.3 on grey digits
    if checks is not None:
        print("gradient-masking checks:")
        for name, c in checks.items():
            state = "skipped" if c["passed"] is None else "pass" if c["passed"] else "FLAG"
            nums = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.items()
                             if k not in ("passed", "skipped"))
            print(f"  {state:7} {name}: {nums}" + (f" ({c['skipped']})" if c["passed"] is None else ""))
    for path in files.values():
        print(f"wrote {path}")
    return 0

