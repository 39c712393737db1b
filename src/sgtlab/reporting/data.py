"""What the report reads: results.csv rows grouped by method label, the per-image outcomes of each
run (`robustness_per_sample.csv`), the headline attack and budgets, and a one-line setup text."""
from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sgtlab.experiments.store import EXPERIMENT, run_dir
from sgtlab.io import read_json
from sgtlab.reporting.eps import eps_text
from sgtlab.reporting.summary import mean_std

#: the headline attack: the per-sample worst case over every attack that ran, else the strongest present
HEADLINE_ORDER = ("ensemble", "apgd-ce", "apgd-dlr", "pgd", "mifgsm", "square", "fgsm")
ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "mifgsm": "MI-FGSM", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR",
                "pgd-50": "PGD-50", "pgd-10x5": "PGD-10x5 (5 restarts)", "square": "Square",
                "autoattack": "AutoAttack-standard", "ensemble": "ensemble", "pgd-restarts": "PGD restarts"}


def labels_in_order(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in rows))


def by_label(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["label"]].append(r)
    return groups


def robust_columns(rows: list[dict]) -> dict[str, list[float]]:
    """attack -> sorted eps values present in the table."""
    out: dict[str, set[float]] = defaultdict(set)
    for r in rows:
        for k in r:
            if k.startswith("rob:"):
                _, attack, eps = k.split(":")
                out[attack].add(float(eps))
    return {a: sorted(e) for a, e in out.items()}


def curve_stats(group: list[dict], attack: str, eps_list: list[float]) -> tuple[list[float], list[float], list[float]]:
    """eps (with 0 = clean), mean and std over seeds of robust accuracy."""
    xs, ms, sds = [0.0], *[[v] for v in mean_std([r["clean_accuracy"] for r in group])]
    for e in eps_list:
        m, sd = mean_std([r.get(f"rob:{attack}:{e:g}") for r in group])
        xs.append(e), ms.append(m), sds.append(sd)
    return xs, ms, sds


def experiment_config(root: Path) -> dict[str, Any]:
    path = Path(root) / EXPERIMENT
    return read_json(path) if path.exists() else {}  # damaged: one line


def headline_attack(rows: list[dict]) -> str | None:
    cols = robust_columns(rows)
    return next((a for a in HEADLINE_ORDER if a in cols), next(iter(cols), None))


def headline_eps(rows: list[dict], cfg: dict[str, Any]) -> list[float]:
    """The data set's standard budgets (`attack.headline_eps`, else sgtlab.data.budgets) that the
    eps grid holds; the grid's largest value when it holds none of them."""
    attack = headline_attack(rows)
    if attack is None:
        return []
    grid = robust_columns(rows)[attack]
    wanted = (cfg.get("attack") or {}).get("headline_eps")
    if wanted is None:
        try:
            from sgtlab.data.budgets import budgets

            wanted = list(budgets(rows[0]["dataset"]).headline_eps)
        except Exception:  # an unknown data set in an old folder: fall back to the grid
            wanted = []
    found = [g for w in wanted for g in grid if math.isclose(g, float(w), rel_tol=1e-4)]
    return sorted(set(found)) or grid[-1:]


def is_nested(rows: list[dict]) -> bool:
    return all(r.get("sweep", "nested") != "from-scratch" for r in rows)


MAX_PER_SAMPLE_BYTES = 1 << 30  # a per-image table larger than this is not one sgtlab wrote


@lru_cache(maxsize=256)
def _per_sample(path: str, mtime: float) -> dict[str, np.ndarray]:
    from sgtlab.errors import SgtlabError
    from sgtlab.io import read_bytes_bounded

    text = read_bytes_bounded(path, MAX_PER_SAMPLE_BYTES, "per-image table", follow=False)
    try:
        reader = csv.reader(io.StringIO(text.decode("utf-8"), newline=""))
        header = next(reader)
        # empty: an attack run on the first m images only (folded into the ensemble, see robustness.fold)
        rows = [[float(v) if v != "" else np.nan for v in r] for r in reader]
        if any(len(r) != len(header) for r in rows):
            raise ValueError(f"a row of another length than the header's {len(header)}")
        data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    except (ValueError, StopIteration, UnicodeDecodeError, csv.Error) as e:
        raise SgtlabError(f"{path} is damaged ({' '.join(str(e).split())[:100] or type(e).__name__}); run "
                          f"`sgtlab attack` on that run again (with --overwrite), or delete it") from None
    return {h: data[:, i] for i, h in enumerate(header)}


def run_folder(root: Path, row: dict[str, Any] | str) -> Path:
    """The folder of a report row: its own `folder` (rows of any run folders, `sgtlab.experiments.store`)
    or the experiment's `root/runs/NAME`."""
    if isinstance(row, dict):
        return Path(row["folder"]) if row.get("folder") else run_dir(root, row["run"])
    return run_dir(root, row)


def per_sample(root: Path, run: dict[str, Any] | str) -> dict[str, np.ndarray] | None:
    """A run's per-image table as columns (None when the run has none); `run` a row or a run name."""
    path = run_folder(root, run) / "robustness_per_sample.csv"
    if not path.exists():
        return None
    return _per_sample(str(path), path.stat().st_mtime)


def outcomes(root: Path, run: dict[str, Any] | str, attack: str, eps: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(test-set image ids, robust 0/1 per image) of a run under `attack` at `eps`; the ensemble is
    derived (worst case over the run's attacks) when it was not stored."""
    table = per_sample(root, run)
    if table is None:
        return None
    ids = table.get("test_index", table["index"])
    key = f"{attack}@{eps:g}"
    if key in table:
        return ids, table[key]
    if attack == "ensemble":
        # the gradient-masking checks' columns (folders made before the headline suite) judge, not headline
        cols = [v for k, v in table.items() if k.endswith(f"@{eps:g}") and not k.startswith("checks:")]
        if cols:
            return ids, np.fmin.reduce(cols, axis=0)  # fmin: skips the images a folded attack did not run on
    return None


def describe_attack(text: str) -> str:
    """'PGD(steps=10, alpha=None, random_start=True, restarts=1, ...)' -> 'PGD (10 steps, step 2.5 eps/10,
    random start, 1 restart)': an attack and its strength, as a reader wants it."""
    m = re.fullmatch(r"\s*([\w-]+)\((.*)\)\s*", text)
    if not m:
        return text
    name, args = m.group(1), dict(re.findall(r"(\w+)=([^,]+)", m.group(2)))
    name = {"MIFGSM": "MI-FGSM", "APGDCE": "APGD-CE", "APGDDLR": "APGD-DLR"}.get(name, name)
    parts = []
    if "steps" in args:
        parts.append(f"{args['steps']} steps")
        if args.get("alpha") == "None" and name == "PGD":
            parts.append(f"step 2.5 eps/{args['steps']}")
    if args.get("random_start") == "True":
        parts.append("random start")
    if args.get("restarts") not in (None, "1"):
        parts.append(f"{args['restarts']} restarts")
    if "queries" in args:
        parts.append(f"{args['queries']} queries")
    if "decay" in args:
        parts.append(f"momentum {args['decay']}")
    return f"{name} ({', '.join(parts)})" if parts else name


def _suite_counts(rows: list[dict], root: Path, suite: dict, ds) -> str:
    """' (images attacked per run, of 1000: eps 0.1: Square 798-820; eps 0.3: none)': how many images
    each expensive attack of the suite really ran on (`suite.images` of each run's robustness.json),
    as the range over runs; '' when the runs did not record it."""
    counts: dict[tuple[str, str], list[int]] = {}
    totals = set()
    for r in rows:
        path = run_folder(root, r) / "robustness.json"
        try:
            images = (read_json(path).get("suite") or {}).get("images") or {}
        except Exception:  # noqa: BLE001  (a damaged or missing file: that run's counts are not known)
            continue
        for e, per in images.items() if isinstance(images, dict) else ():
            for name, k in per.items() if isinstance(per, dict) else ():
                if name == "n":
                    totals.add(k)
                elif isinstance(k, int):
                    counts.setdefault((e, name), []).append(k)
    if not counts:
        return ""
    parts = []
    for e in dict.fromkeys(e for e, _ in counts):
        got = [(ATTACK_NAMES.get(name, name), min(v), max(v))
               for (e2, name), v in counts.items() if e2 == e]
        text = ", ".join(f"{name} {lo}" + (f"-{hi}" if hi != lo else "") for name, lo, hi in got if hi > 0)
        parts.append(f"eps {eps_text(float(e), ds)}: {text or 'none'}")
    of = f", of {totals.pop()}" if len(totals) == 1 else ""
    return f" (images attacked per run{of}: {'; '.join(parts)})"


def _epochs_text(rows: list[dict]) -> str:
    """'2 epoch(s)', or, when methods trained for different lengths, the most common length and the
    others by label: '2 epoch(s) (SGA 4)'."""
    known = [r for r in rows if r.get("epochs") is not None]
    if not known:
        return "? epoch(s)"
    common = Counter(r["epochs"] for r in known).most_common(1)[0][0]
    by_label: dict[str, set] = defaultdict(set)
    for r in known:
        by_label[str(r.get("label", r.get("method", "?")))].add(r["epochs"])
    others = [f"{label} {'/'.join(str(e) for e in sorted(eps))}" for label, eps in by_label.items()
              if eps != {common}]
    return f"{common} epoch(s)" + (f" ({', '.join(others)})" if others else "")


def setup_text(rows: list[dict], root: Path, attack: str) -> str:
    """Data, training, test images, attack and its strength, seeds: what every finding is about."""
    r0 = rows[0]
    seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
    train_n = r0.get("train_subset")
    epochs = _epochs_text(rows)
    n_test = r0.get("n_test")
    attacks_run, folded, suite = {}, {}, {}
    path = run_folder(root, r0) / "robustness.json"
    if path.exists():
        stored = read_json(path)
        attacks_run, suite = stored.get("attacks_run", {}), stored.get("suite") or {}
        folded = {c: f for c, f in stored.get("folded", {}).items() if not c.startswith("suite:")}
        n_test = n_test or stored.get("n")
    members = ", ".join(describe_attack(v) for v in attacks_run.values()) if attacks_run else "the attacks run"
    ds = r0.get("dataset")  # eps as k/255 on colour data
    if suite.get("attacks"):  # the headline suite (sgtlab.evaluate.headline_suite): every image, each headline eps
        members += (f"; at eps {' and '.join(eps_text(e, ds) for e in suite['eps'])} on every image also "
                    f"{' and '.join(suite['attacks'].values())}, each where no cheaper attack had fooled the image"
                    f"{_suite_counts(rows, root, suite, ds)}")
    if folded:  # attacks of the masking checks / AutoAttack, run on the first images at one eps each
        order = list(ATTACK_NAMES)
        groups: dict[tuple[int, float, str], list[str]] = {}
        for col, f in folded.items():
            source, _, name = col.rsplit("@", 1)[0].rpartition(":")
            groups.setdefault((f["n"], f["eps"], source), []).append((name, f.get("note")))
        for (n, e, source), found in groups.items():
            found.sort(key=lambda a: order.index(a[0]) if a[0] in order else len(order))
            names = [ATTACK_NAMES.get(a, a) + (f" ({note})" if note else "") for a, note in found]
            listed = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
            members += f"; on the first {n} images at eps {eps_text(e, ds)}, also {'the gradient-masking checks’ ' if source == 'checks' else ''}{listed}"
    what = (f"the per-image worst case over {members}" if attack == "ensemble"
            else describe_attack(attacks_run.get(attack, ATTACK_NAMES.get(attack, attack))))
    sweep = "nested sweep: accuracy at eps is the best attack over every eps' <= eps" if is_nested(rows) \
        else "each eps attacked from scratch"
    return (f"{r0.get('dataset')}, {r0.get('model')}, {epochs} on "
            f"{train_n if train_n else 'all'} training images, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
            f"{n_test} test images (a seeded class-stratified subset, the same for every run); "
            f"attack: {what} ({sweep})")
