"""The report's tables (written as CSV, Markdown and LaTeX by `sgtlab.reporting.summary.Table`)."""
from __future__ import annotations

from pathlib import Path

from sgtlab.reporting.summary import Table, fmt_ms, mean_std
from sgtlab.io import read_json
from sgtlab.reporting.data import ATTACK_NAMES, by_label, is_nested, labels_in_order, robust_columns, run_folder
from sgtlab.reporting.eps import eps_text
from sgtlab.reporting.flags import flagged_labels, footnote, marked, under_trained
from sgtlab.stats import wilson_interval


def _head(attack: str, e: float, nested: bool, dataset: str | None = None) -> str:
    return f"{attack} {'≤' if nested else '@'}{eps_text(e, dataset)}"


def dataset_of(rows: list[dict]) -> str | None:
    """The data set all rows share (eps prints as k/255 on colour data), else None."""
    names = {r.get("dataset") for r in rows}
    return names.pop() if len(names) == 1 else None


def _flags(rows: list[dict], flags: dict[str, str] | None) -> dict[str, str]:
    return under_trained(rows) if flags is None else flags


def headline_table(rows: list[dict], attack: str, eps: list[float], flags: dict[str, str] | None = None) -> Table:
    """The headline: clean and robust accuracy under the headline attack at the standard eps. A method
    with an under-trained run (`flags`: `sgtlab.reporting.flags.under_trained`, computed when None)
    is marked †, the footnote (`Table.note`) names the run and its reason."""
    groups, flags = by_label(rows), _flags(rows, flags)
    bad, ds = flagged_labels(rows, flags), dataset_of(rows)
    name = ATTACK_NAMES.get(attack, attack)
    header = ["method", "seeds", "clean"] + [f"{name} eps {eps_text(e, ds)}" for e in eps]
    body = []
    for l in labels_in_order(rows):
        g = groups[l]
        body.append([marked(l, bad), str(len(g)), fmt_ms(*mean_std([r["clean_accuracy"] for r in g]), percent=True)]
                    + [fmt_ms(*mean_std([r.get(f"rob:{attack}:{e:g}") for r in g]), percent=True) for e in eps])
    return Table(f"Headline: robust accuracy (%) under the {name} at the data set's standard eps, mean ± sd over "
                 f"seeds", header, body, note=footnote(flags))


def per_run_table(rows: list[dict], attack: str, eps: list[float], flags: dict[str, str] | None = None) -> Table:
    """Each run's clean and headline robust accuracy with its 95 % Wilson interval over its test images
    (`n_test`); an under-trained run marked †, with its reason in the footnote."""
    flags, ds = _flags(rows, flags), dataset_of(rows)
    name = ATTACK_NAMES.get(attack, attack)
    header = ["run", "images", "clean"] + [f"{name} eps {eps_text(e, ds)}" for e in eps]
    body = []
    for r in rows:
        n = r.get("n_test")
        cells = [marked(str(r["run"]), flags), str(n or "–")]
        for v in [r.get("clean_accuracy")] + [r.get(f"rob:{attack}:{e:g}") for e in eps]:
            if v is None or not n:
                cells.append("–" if v is None else f"{100 * v:.1f}")
                continue
            lo, hi = wilson_interval(round(v * n), n)
            cells.append(f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        body.append(cells)
    return Table("Per run: accuracy (%) with its 95 % Wilson interval over the run's test images", header, body,
                 note=footnote(flags))


def accuracy_table(rows: list[dict], flags: dict[str, str] | None = None) -> Table:
    groups, labels, cols = by_label(rows), labels_in_order(rows), robust_columns(rows)
    nested, flags, ds = is_nested(rows), _flags(rows, flags), dataset_of(rows)
    bad = flagged_labels(rows, flags)
    header = ["method", "seeds", "clean"] + [_head(a, e, nested, ds) for a, es in cols.items() for e in es]
    body = []
    for l in labels:
        g = groups[l]
        cells = [marked(l, bad), str(len(g)), fmt_ms(*mean_std([r["clean_accuracy"] for r in g]), percent=True)]
        cells += [fmt_ms(*mean_std([r.get(f"rob:{a}:{e:g}") for r in g]), percent=True)
                  for a, es in cols.items() for e in es]
        body.append(cells)
    how = ("'≤ eps': nested sweep, the best attack over every eps' ≤ eps of the grid" if nested
           else "'@ eps': each eps attacked from scratch")
    return Table(f"Clean and robust accuracy (%) per attack and eps, mean ± sd over seeds ({how})", header, body,
                 note=footnote(flags))


def saliency_table(rows: list[dict], flags: dict[str, str] | None = None) -> Table | None:
    keys: list[tuple[str, str]] = []
    for r in rows:
        for k in r:
            if k.startswith("sal:"):
                _, m, metric = k.split(":", 2)
                if (m, metric) not in keys:
                    keys.append((m, metric))
    if not keys:
        return None
    methods = list(dict.fromkeys(m for m, _ in keys))
    metrics = list(dict.fromkeys(x for _, x in keys))
    groups, flags = by_label(rows), _flags(rows, flags)
    bad = flagged_labels(rows, flags)
    body = []
    for l in labels_in_order(rows):
        for m in methods:
            body.append([marked(l, bad), m]
                        + [fmt_ms(*mean_std([r.get(f"sal:{m}:{x}") for r in groups[l]])) for x in metrics])
    return Table("Saliency-map quality per training method and saliency method (mean over images, then mean ± sd "
                 "over seeds)", ["method", "saliency"] + metrics, body, note=footnote(flags))


def checks_table(rows: list[dict], root: Path, flags: dict[str, str] | None = None) -> Table | None:
    """Per run and check: pass / FLAG / skipped, with the tolerance the check used (the 95 % binomial
    half-width of its n images)."""
    names = list(dict.fromkeys(k[6:] for r in rows for k in r if k.startswith("check:")))
    if not names:
        return None
    word = {True: "pass", False: "FLAG", None: "skipped"}
    flags = _flags(rows, flags)
    body = []
    n_images = set()
    for r in rows:
        path = run_folder(root, r) / "checks.json"
        detail = read_json(path) if path.exists() else {}
        cells = [marked(str(r["run"]), flags)]
        for n in names:
            d = detail.get(n, {})
            tol = d.get("tol")
            if d.get("n"):
                n_images.add(d["n"])
            cells.append(word[r.get(f"check:{n}")] + (f" (±{100 * tol:.1f} pp)" if isinstance(tol, float) else ""))
        body.append(cells)
    imgs = ", ".join(str(n) for n in sorted(n_images)) or "?"
    return Table(f"Gradient-masking checks per run on {imgs} test images; a check flags only a difference beyond "
                 f"the tolerance in brackets (the 95 % binomial half-width of its images)", ["run"] + names, body,
                 note=footnote(flags))
