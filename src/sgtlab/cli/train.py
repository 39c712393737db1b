"""`sgtlab train`: train one model with one method."""
from __future__ import annotations

import json

from sgtlab.cli.options import add_dataclass_options, dataclass_from_args
from sgtlab.train import METHODS, MethodConfig, TrainConfig, fit


def add_parser(sub):
    p = sub.add_parser("train", help="train one model with one method",
                       description="Train one model with one training method; writes config.json, "
                                   "metrics.jsonl and checkpoint.safetensors into --out.")
    p.add_argument("--out", required=True, help="output folder of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log losses and accuracies to OUT/tensorboard (needs the tensorboard package)")
    add_dataclass_options(p, TrainConfig, skip=("method_cfg",))
    g = p.add_argument_group("method options", "methods: " + ", ".join(
        f"{n} ({METHODS.get(n).description})" for n in METHODS.names()))
    add_dataclass_options(g, MethodConfig)
    # a method option left out parses as None, so that one typed with its default value is known
    # as given too (`--lam 1.0 --method st` is refused like `--lam 2`); the help keeps the default
    for a in g._group_actions:
        if a.dest == "train_eps":  # data-set-aware: unless given, the data set's (sgtlab.data.budgets)
            a.help = "L-inf budget of training attacks (pixel units; default: the data set's, 0.3 for MNIST, 8/255 for CIFAR-10)"
        elif a.help and "%(default)s" in a.help:
            a.help = a.help.replace("%(default)s", str(a.default))
        a.default = None
    p.set_defaults(_method_options=[a.dest for a in g._group_actions])
    return p


def run(args) -> int:
    from sgtlab.train.resolve import check_method_options, resolve_train

    given = {d for d in args._method_options if getattr(args, d) is not None}
    defaults = MethodConfig()  # train_eps's is a placeholder: resolve_train puts the data set's
    for d in args._method_options:
        if getattr(args, d) is None:
            setattr(args, d, getattr(defaults, d))
    mc = dataclass_from_args(MethodConfig, args)
    cfg = dataclass_from_args(TrainConfig, args, method_cfg=mc).validate()
    check_method_options(args.method, given)  # --k with --method st: refused, naming st's options
    # config.json says what the run uses: the data set's model, eps (0.3 MNIST, 8/255 CIFAR-10), k, steps
    cfg = resolve_train(cfg, given)
    dist = None
    from sgtlab import distributed

    if distributed.launched_by_torchrun():
        dist = distributed.DistContext.init(cfg.device)
    try:
        result = fit(cfg, args.out, resume=args.resume, progress=args.progress and not args.json, dist=dist,
                     tensorboard=args.tensorboard)
    finally:
        if dist:
            dist.close()
    if args.json and (dist is None or dist.rank == 0):
        print(json.dumps(result))
    return 0


def resume_argv(argv: list[str]) -> list[str]:
    """The command that continues an interrupted `train`: the same one with --resume."""
    return argv if "--resume" in argv else [*argv, "--resume"]
