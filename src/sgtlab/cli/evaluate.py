"""`sgtlab evaluate`: clean test accuracy of a trained model."""
from __future__ import annotations

import json

from sgtlab.cli.options import DATASET_HELP, add_verify_option
from sgtlab.evaluate import accuracy
from sgtlab.validate import int64


def add_parser(sub):
    p = sub.add_parser("evaluate", help="clean accuracy of a checkpoint on a test split",
                       description="Clean accuracy of a trained model on the test split of a data set.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder or a checkpoint.safetensors file")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help="folder of the data files (default: $SGTLAB_DATA)")
    add_verify_option(p)
    p.add_argument("--n", type=int64, default=None, help="evaluate on N test images (a seeded class-stratified subset: the images `sgtlab attack --n` uses)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def run(args) -> int:
    from sgtlab.cli.common import load_model_and_data

    model, meta, data = load_model_and_data(args.run, args.dataset, args.data_dir, args.n, args.device,
                                            verify=args.verify)
    acc = accuracy(model, data)
    result = {"accuracy": acc, "n": len(data), "dataset": data.name, "model": meta["arch"]["model"]}
    print(json.dumps(result) if args.json else f"{data.name} test accuracy: {acc:.4f} ({len(data)} images)")
    return 0
