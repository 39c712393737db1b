"""`sgtlab benchmark`: RobustBench's evaluation of one model in one command (`sgtlab.benchmark`):
clean and standard-AutoAttack robust accuracy at the data set's standard L-inf budget on a
class-stratified test subset, Wilson intervals, the gradient-masking flags; one small JSON."""
from __future__ import annotations

import json

from sgtlab.cli.options import DATASET_HELP, add_verify_option
from sgtlab.validate import int64


def add_parser(sub):
    p = sub.add_parser("benchmark", help="clean and AutoAttack robust accuracy at the standard budget, as JSON",
                       description="RobustBench-style evaluation: clean accuracy and standard-AutoAttack robust "
                                   "accuracy at the data set's standard L-inf budget (8/255 colour, 0.3 grey "
                                   "digits) on a class-stratified test subset, with Wilson intervals and the "
                                   "gradient-masking checks' flags.")
    p.add_argument("model", metavar="RUN|MODULE:FACTORY",
                   help="a run folder or checkpoint, or MODULE:FACTORY, a function of an importable module that "
                        "returns the model (an nn.Module taking [0, 1] images, weights loaded); then give --dataset")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help="folder of the data files (default: $SGTLAB_DATA)")
    add_verify_option(p)
    p.add_argument("--eps", default=None, help="the L-inf budget (default: the data set's standard one), e.g. 8/255")
    p.add_argument("--n", type=int64, default=1000, help="test images, class-stratified (default: 1000)")
    p.add_argument("--seed", type=int64, default=0, help="seed of the subset and the attacks")
    p.add_argument("--no-checks", dest="checks", action="store_false",
                   help="skip the gradient-masking checks (no flags)")
    p.add_argument("--checks-n", type=int64, default=None, help="images of the checks (default: all --n)")
    p.add_argument("--checks-queries", type=int64, default=1000, help="Square's queries in the checks")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device")
    p.add_argument("--out", default=None, help="also write OUT/benchmark.json")
    return p


def _model_and_data(args):
    from pathlib import Path

    from sgtlab.errors import SgtlabError

    spec = args.model
    if Path(spec).exists() or ":" not in spec:
        from sgtlab.cli.common import load_model_and_data

        model, _, data = load_model_and_data(spec, args.dataset, args.data_dir, None, args.device,
                                             verify=args.verify)
        return model, data
    import importlib

    module, _, factory = spec.partition(":")
    if args.dataset is None:
        raise SgtlabError(f"{spec}: a model from a factory needs --dataset (a name, folder:PATH or npz:PATH)")
    try:
        fn = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as e:
        raise SgtlabError(f"cannot load {spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    from sgtlab.device import resolve_device

    model = fn()
    from torch import nn

    if not isinstance(model, nn.Module):
        raise SgtlabError(f"{spec} must return a torch.nn.Module, got {type(model).__name__}")
    from sgtlab.data import load_dataset

    data = load_dataset(args.dataset, "test", args.data_dir, verify=args.verify)
    return model.to(resolve_device(args.device)).eval(), data


def run(args) -> int:
    from sgtlab.api.benchmark import benchmark
    from sgtlab.cli.options import parse_float_list
    from sgtlab.data.budgets import check_unit_eps

    eps = None
    if args.eps is not None:
        values = parse_float_list(args.eps)
        check_unit_eps("--eps", values)
        if len(values) != 1:
            from sgtlab.errors import SgtlabError

            raise SgtlabError(f"--eps takes one budget, got {len(values)}")
        eps = values[0]
    checks = {"n": args.checks_n, "queries": args.checks_queries} if args.checks else False
    model, data = _model_and_data(args)
    result = benchmark(model, data, eps=eps, n=args.n, seed=args.seed, checks=checks, out=args.out)
    result["model"] = args.model
    print(json.dumps(result))
    return 0
