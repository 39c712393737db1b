"""`sgtlab explain`: saliency maps of trained models, their quality metrics, a table and pictures."""
from __future__ import annotations

from pathlib import Path

from sgtlab.cli.options import DATASET_HELP, add_verify_option, parse_float_list, parse_name_list
from sgtlab.errors import SgtlabError
from sgtlab.validate import check_seed, finite_float, int64


def add_parser(sub):
    p = sub.add_parser(
        "explain", help="saliency maps and their quality metrics for one or more checkpoints",
        description="Saliency maps (grad, input-x-grad, smoothgrad, ig) of trained models on test images, "
                    "their quality metrics (entropy, size, Gini, AOPC/ABPC, ROAD, masked accuracy, low-saliency "
                    "robustness, sanity checks by cascading randomisation, captum's infidelity and "
                    "sensitivity-max, Decoy-MNIST localisation) and pictures. Maps explain, and metrics score, one "
                    "class per image (--target). Writes interpretability.csv (one row "
                    "per checkpoint and saliency method, mean and std of each metric), interpretability.json "
                    "(curves, per-image values) and PNG/PDF figures into --out. Each RUN folder also gets its own "
                    "RUN/interpretability.json, the run layout `reproduce` writes and `report` reads.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoint.safetensors files")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help="folder of the data files (default: $SGTLAB_DATA)")
    add_verify_option(p)
    p.add_argument("--methods", default="grad,smoothgrad,ig", help="saliency methods, comma-separated "
                   "(grad, input-x-grad, smoothgrad, ig; default: %(default)s)")
    p.add_argument("--metrics", default="all", help="'all' or a comma-separated subset of: entropy, size, gini, "
                   "aopc, road, masked_accuracy, low_saliency, localisation, sanity, infidelity, sensitivity "
                   "(default: %(default)s)")
    p.add_argument("--target", default="true", choices=("true", "pred"),
                   help="the class every map explains and every metric scores: the true label or the model's "
                        "prediction (default: %(default)s)")
    p.add_argument("--n", type=int64, default=256, help="number of test images, a seeded class-stratified subset (default: %(default)s)")
    p.add_argument("--out", default=None, help="folder for the comparison across runs (CSV, JSON, figures); "
                                               "without it only each RUN folder's interpretability.json is written")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an interpretability.json of another evaluation (other options or data) "
                        "(default: refused, the finished result is kept)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log saliency-map grids to RUN/tensorboard (needs the tensorboard package)")
    p.add_argument("--smoothgrad-samples", type=int64, default=10, help="SmoothGrad noisy samples (default: %(default)s)")
    p.add_argument("--smoothgrad-noise", type=finite_float, default=0.15,
                   help="SmoothGrad noise std as a fraction of the input range (default: %(default)s)")
    p.add_argument("--ig-steps", type=int64, default=32, help="Integrated Gradients steps (default: %(default)s)")
    p.add_argument("--aopc-steps", type=int64, default=None, help="AOPC steps L (default: half the patches)")
    p.add_argument("--aopc-patch", type=int64, default=None, help="AOPC patch size (default: 2 for 28 px, 4 for 32 px)")
    p.add_argument("--eps", type=finite_float, default=None,
                   help="low-saliency curve: noise / PGD budget (default: the data set's, 0.3 for MNIST, 8/255 for "
                        "CIFAR-10; sgtlab.data.budgets)")
    p.add_argument("--qs", default="0:1:0.1", help="low-saliency fractions q (default: %(default)s)")
    p.add_argument("--pgd-qs", default=None, help="PGD's fractions q (default: those of --qs)")
    p.add_argument("--pgd-steps", type=int64, default=10, help="PGD steps of the low-saliency curve (default: %(default)s)")
    p.add_argument("--pgd-n", type=int64, default=None, help="PGD of the low-saliency curve on the first N images (default: all)")
    p.add_argument("--no-pgd", action="store_true", help="low-saliency curve with uniform noise only")
    p.add_argument("--road-fractions", default="0.1:0.9:0.1", help="ROAD removal fractions (default: %(default)s)")
    p.add_argument("--road-n", type=int64, default=None, help="ROAD on the first N images (default: all)")
    p.add_argument("--sanity-n", type=int64, default=64, help="sanity checks on the first N images (default: %(default)s)")
    p.add_argument("--captum-n", type=int64, default=64,
                   help="infidelity and sensitivity-max on the first N images (default: %(default)s)")
    p.add_argument("--captum-perturb", type=int64, default=10,
                   help="perturbations per image of infidelity and sensitivity-max (default: %(default)s)")
    p.add_argument("--seed", type=int64, default=0, help="seed of every random fill and noise (default: %(default)s)")
    p.add_argument("--batch-size", type=int64, default=None,
                   help="images per model call (default: 128 on a CPU, 1024 on a GPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _labels(runs: list[str]) -> list[str]:
    """Short, unique row names: the run folder name, made unique with the parent when needed."""
    paths = [Path(r).resolve() for r in runs]
    names = [p.parent.name if p.is_file() else p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{(p.parent if p.is_file() else p).parent.name}/{nm}" for p, nm in zip(paths, names)]
    if len(set(names)) < len(names):
        names = [f"{i}:{nm}" for i, nm in enumerate(names)]
    return names


def run(args) -> int:
    from sgtlab.evaluate.interpretability import METRICS
    from sgtlab.explain import SALIENCY

    methods = parse_name_list(args.methods)
    if not methods:
        raise SgtlabError("--methods is empty")
    for m in methods:
        SALIENCY.get(m)
    metrics = "all" if args.metrics.strip() == "all" else parse_name_list(args.metrics)
    for m in ([] if metrics == "all" else metrics):
        if m not in METRICS:
            raise SgtlabError(f"unknown metric {m!r}; choose 'all' or from: {', '.join(METRICS)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise SgtlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_seed(args.seed, "--seed")
    from sgtlab.experiments.store import writable_run

    if args.out is None and not all(writable_run(r) for r in args.runs):
        raise SgtlabError("give --out for checkpoint files and finished `reproduce` runs (results of other run "
                          "folders go into the folders)")
    if args.tensorboard:
        from sgtlab.tracking import require_tensorboard

        require_tensorboard()
    qs = parse_float_list(args.qs)
    pgd_qs = parse_float_list(args.pgd_qs) if args.pgd_qs else None
    for flag in ("pgd_n", "road_n", "sanity_n", "captum_n", "captum_perturb"):
        v = getattr(args, flag)
        if v is not None and v < (2 if flag == "sanity_n" else 1):
            raise SgtlabError(f"--{flag.replace('_', '-')} must be >= {2 if flag == 'sanity_n' else 1}, got {v}")
    road_fractions = parse_float_list(args.road_fractions)
    if any(not 0 <= f < 1 for f in road_fractions):  # refused before any checkpoint is loaded
        raise SgtlabError(f"ROAD removal fractions must be in [0, 1), got {road_fractions}")
    from contextlib import ExitStack

    from sgtlab.io import folder_lock

    with ExitStack() as stack:  # every folder written is locked: two commands on one run, the second is refused
        targets = ([Path(args.out)] if args.out else []) + [Path(r) for r in args.runs if writable_run(r)]
        for folder in {t.resolve(): t for t in targets}.values():
            stack.enter_context(folder_lock(folder, "run folder"))
        return _explain(args, methods, metrics, qs, pgd_qs, road_fractions)


# options that do not change what explain measures (so not part of a result's identity)
_NOT_IDENTITY = {"runs", "out", "data_dir", "device", "no_progress", "tensorboard", "overwrite", "batch_size",
                 "verify", "command", "imports"}


def _explain(args, methods, metrics, qs, pgd_qs, road_fractions) -> int:
    from tqdm import tqdm

    from sgtlab.cli.common import load_model_and_data
    from sgtlab.data.subsets import data_hash
    from sgtlab.evaluate.interpretability import METRICS, resolve_metrics, interpretability_metrics, summary_rows
    from sgtlab.experiments.store import INTERPRETABILITY, check_replace, csv_text, writable_run
    from sgtlab.figures import interpretability_figures
    from sgtlab.io import write_json_atomic, write_text_atomic

    # load every checkpoint and the data first: a bad one fails before any work
    loaded = [load_model_and_data(r, args.dataset, args.data_dir, args.n, args.device, verify=args.verify)
              for r in args.runs]
    names = _labels(args.runs)
    for _, _, d in loaded:  # a request that cannot run fails as such, before the finished-result guard
        resolve_metrics(metrics, {"patch_mask", "digit_mask"} <= set(getattr(d, "extras", {}) or {}))
    base = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_IDENTITY and not k.startswith("_")}
    requests = {name: {**base, "data": data_hash(d.x, d.y)} for name, (_, _, d) in zip(names, loaded)}
    if args.out:  # a finished result of another evaluation is kept (unless --overwrite)
        check_replace(args.out, INTERPRETABILITY, requests,
                      lambda old: {k: v.get("request") for k, v in old.items() if isinstance(v, dict)},
                      args.overwrite, "explain")
    for name, r in zip(names, args.runs):
        if writable_run(r):
            check_replace(r, INTERPRETABILITY, requests[name], lambda old: old.get("request"), args.overwrite,
                          "explain")
    if args.eps is None:
        from sgtlab.data.budgets import budgets

        args.eps = budgets(args.dataset or loaded[0][1]["arch"].get("dataset") or loaded[0][2].name).low_saliency_eps
    opts = {"smoothgrad": {"samples": args.smoothgrad_samples, "noise": args.smoothgrad_noise},
            "ig": {"steps": args.ig_steps}}
    out = Path(args.out) if args.out else None
    chosen = metrics if metrics != "all" else METRICS
    steps_per_model = len(methods) * (1 + sum(k in chosen for k in ("aopc", "road", "masked_accuracy", "low_saliency",
                                                                     "infidelity", "sensitivity"))) + ("sanity" in chosen)
    bar = tqdm(total=len(loaded) * steps_per_model, desc="explain", unit="step", disable=args.no_progress)
    results, rows, per_run = {}, [], []
    try:
        for name, run_path, (model, meta, data) in zip(names, args.runs, loaded):
            def tick(label, _name=name):
                bar.set_postfix_str(f"{_name}: {label}")
                bar.update(1)

            res = interpretability_metrics(
                model, data, methods, metrics, None, method_options=opts, aopc_patch=args.aopc_patch,
                aopc_steps=args.aopc_steps, qs=qs, eps=args.eps, pgd=not args.no_pgd, pgd_qs=pgd_qs,
                pgd_steps=args.pgd_steps, pgd_n=args.pgd_n, road_fractions=road_fractions, road_n=args.road_n,
                sanity_n=args.sanity_n, captum_n=args.captum_n, captum_perturb=args.captum_perturb,
                target=args.target, seed=args.seed, batch_size=args.batch_size, progress=tick)
            res["request"] = requests[name]
            if writable_run(run_path):  # the run layout: RUN/interpretability.json, as reproduce writes
                per_run.append((Path(run_path), dict(res)))
            res["run"] = str(run_path)
            results[name] = res
            rows += summary_rows(res, model=name, run=str(run_path), arch=meta["arch"]["model"],
                                 train_method=meta.get("config", {}).get("method", ""), dataset=data.name)
    finally:
        bar.close()
    if out is not None:  # first: a failing --out leaves the run folders as they were
        write_json_atomic(out / "interpretability.json", results)
        write_text_atomic(out / "interpretability.csv", csv_text(rows))
        figs = interpretability_figures(results, out / "figures")
        print(f"wrote {out / 'interpretability.csv'} ({len(rows)} rows), {out / 'interpretability.json'} and "
              f"{len(figs)} figure files in {out / 'figures'}")
    for folder, res in per_run:
        write_json_atomic(folder / "interpretability.json", res)
        if args.tensorboard:
            from sgtlab.tracking import Tracker

            tracker = Tracker(folder)
            tracker.saliency("examples", res["examples"]["images"], res["examples"]["maps"])
            tracker.close()
    if per_run:
        print("wrote " + ", ".join(str(folder / "interpretability.json") for folder, _ in per_run))
    return 0
