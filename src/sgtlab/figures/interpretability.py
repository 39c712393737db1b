"""Interpretability pictures, drawn from plain arrays and dicts (what `interpretability_metrics`
returns or `interpretability.json` holds), so a report can redraw them from saved results.

Each function writes `<out>.png` and `<out>.pdf` (the suffix of `out`, if any, is dropped) and
returns both paths. Figures are made with `matplotlib.figure.Figure` and the Agg canvas directly:
no pyplot global state, no display needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sgtlab.errors import SgtlabError
from sgtlab.io import atomic_path


def _save(fig: Figure, out: str | Path) -> list[Path]:
    out = Path(out)
    base = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    FigureCanvasAgg(fig)
    paths = []
    for ext in ("png", "pdf"):
        path = base.with_name(base.name + f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _as_image(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """C x H x W or H x W -> something imshow takes (grey or RGB)."""
    img = np.asarray(img, dtype=float)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3:
        return np.clip(np.moveaxis(img, 0, -1), 0, 1), None
    return img, "gray"


def _titles(examples: Mapping[str, Any]) -> list:
    """Each example's class name where the data names its classes, else its label."""
    return examples.get("class_names") or examples["labels"]


def saliency_grid(images: Any, rows: Mapping[str, Any], out: str | Path, *, labels: Sequence[Any] | None = None,
                  title: str | None = None, cmap: str = "hot") -> list[Path]:
    """Grid of saliency maps: the input images in the first row, then one row per entry of `rows`
    (model or saliency method -> N x H x W maps), one column per image. Each map is scaled to its
    own maximum (|s| / max |s|), as the papers show them."""
    images = np.asarray(images, dtype=float)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise SgtlabError(f"images must be N x C x H x W or N x H x W with N >= 1, got shape {images.shape}")
    n, hw = len(images), images.shape[-2:]
    grids = {}
    for name, maps in rows.items():
        maps = np.asarray(maps, dtype=float)
        if maps.shape != (n, *hw):
            raise SgtlabError(f"maps {name!r} of shape {maps.shape} do not fit {n} images of {hw[0]} x {hw[1]} "
                              f"(expected {(n, *hw)})")
        grids[name] = maps
    fig = Figure(figsize=(1.3 * n + 1.2, 1.3 * (len(grids) + 1)))
    axes = fig.subplots(len(grids) + 1, n, squeeze=False)
    for j in range(n):
        img, cm = _as_image(images[j])
        axes[0, j].imshow(img, cmap=cm, vmin=0, vmax=1)
        if labels is not None:
            axes[0, j].set_title(str(labels[j]), fontsize=8)
    for i, (name, maps) in enumerate(grids.items(), start=1):
        for j in range(n):
            a = np.abs(maps[j])
            axes[i, j].imshow(a / a.max() if a.max() > 0 else a, cmap=cmap, vmin=0, vmax=1)
    for i, name in enumerate(["input", *grids]):
        axes[i, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _curve_plot(series: Mapping[str, Mapping[str, Any]], x_key: str, y_keys: Sequence[tuple[str, str, str]],
                out, xlabel: str, ylabel: str, title: str | None) -> list[Path]:
    """One colour per model, one line style per curve kind (`y_keys`: key, style, legend name)."""
    if not series:
        raise SgtlabError("nothing to plot: no curves given")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    colors = {name: f"C{i}" for i, name in enumerate(series)}
    for name, c in series.items():
        for key, style, label in y_keys:
            if key in c and c[key] is not None:
                x = c.get(f"{key}_{x_key}") or c[x_key]  # PGD may have its own, coarser q grid
                # markers only on short curves: on AOPC's ~100 steps they hide the dashes
                ax.plot(x, c[key], style, color=colors[name], marker="." if len(x) <= 30 else None,
                        label=f"{name}, {label}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, handlelength=3.5)  # long enough to show dashed from solid
    if title:
        ax.set_title(title)
    return _save(fig, out)


def masked_accuracy_plot(curves: Mapping[str, Mapping[str, Any]], out, title: str | None = None) -> list[Path]:
    """Accuracy after masking the top-p % salient pixels (solid) against p % random pixels
    (dashed); `curves[name] = {"p": [...], "top": [...], "random": [...]}`."""
    return _curve_plot(curves, "p", [("top", "-", "salient"), ("random", "--", "random")], out,
                       "masked pixels p (%)", "accuracy", title or "Masked accuracy")


def aopc_plot(curves: Mapping[str, Mapping[str, Any]], out, title: str | None = None) -> list[Path]:
    """Mean drop `f(x) - f(x_k)` against step k, MoRF (solid) and LeRF (dashed);
    `curves[name] = {"k": [...], "morf": [...], "lerf": [...]}`. AOPC is the mean of each curve."""
    return _curve_plot(curves, "k", [("morf", "-", "MoRF"), ("lerf", "--", "LeRF")], out, "patches replaced k",
                       "f(x) - f(x_k)", title or "AOPC curves")


def low_saliency_plot(curves: Mapping[str, Mapping[str, Any]], out, title: str | None = None) -> list[Path]:
    """Accuracy when only the q fraction of least-salient pixels is perturbed, uniform noise (solid)
    and PGD (dashed); `curves[name] = {"q": [...], "noise": [...], "pgd_q": [...], "pgd": [...]}`."""
    return _curve_plot(curves, "q", [("noise", "-", "noise"), ("pgd", "--", "PGD")], out,
                       "fraction q of least-salient pixels", "accuracy", title or "Low-saliency robustness")


def road_plot(curves: Mapping[str, Mapping[str, Any]], out, title: str | None = None) -> list[Path]:
    """ROAD: accuracy (the explained class still predicted) after removing a fraction of pixels by
    noisy linear imputation, most relevant first (solid) and least relevant first (dashed);
    `curves[name] = {"fraction": [...], "morf": [...], "lerf": [...]}`. A faithful map: a low
    solid line, a high dashed one."""
    return _curve_plot(curves, "fraction", [("morf", "-", "MoRF"), ("lerf", "--", "LeRF")], out,
                       "fraction of pixels removed (imputed)", "accuracy", title or "ROAD")


# (results key, drawing function, title): the curve pictures, for `interpretability_figures` and the report
CURVE_PLOTS = (("masked_accuracy", masked_accuracy_plot, "Masked accuracy"), ("aopc", aopc_plot, "AOPC curves"),
               ("road", road_plot, "ROAD (noisy linear imputation)"),
               ("low_saliency", low_saliency_plot, "Low-saliency robustness"))


def sanity_plot(series: Mapping[str, Mapping[str, Any]], out, title: str | None = None) -> list[Path]:
    """Cascading randomisation (Adebayo et al. 2018): similarity of the maps of the randomised model
    to the original ones against the layers randomised so far (output side first), Spearman rank
    correlation of |maps| (left) and SSIM (right); `series[name] = {"layers": [...],
    "spearman_mean": [...], "ssim_mean": [...]}`. A method whose lines stay near 1 ignores the
    model; `threshold` (if given) is drawn on the Spearman panel."""
    if not series:
        raise SgtlabError("nothing to plot: no sanity-check results given")
    fig = Figure(figsize=(9.5, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for i, (name, s) in enumerate(series.items()):
        steps = list(range(1, len(s["spearman_mean"]) + 1))
        for ax, key in zip(axes, ("spearman_mean", "ssim_mean")):
            ax.plot([0] + steps, [1.0] + list(s[key]), "-", marker=".", color=f"C{i % 10}", label=name)
    first = next(iter(series.values()))
    ticks = ["none"] + [f"+{n}" for n in first.get("layers", [])]
    for ax, what in zip(axes, ("Spearman rank correlation of |maps|", "SSIM")):
        ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layers randomised (output first, cumulative)")
        ax.set_title(what, fontsize=9)
        ax.grid(alpha=0.3)
    if first.get("threshold") is not None:
        axes[0].axhline(first["threshold"], color="k", lw=0.8, ls=":")
        axes[0].text(0.05, first["threshold"] + 0.02, "FAIL above, with every layer random", fontsize=7)
    axes[0].set_ylabel("similarity to the original maps")
    axes[0].set_ylim(-0.1, 1.05)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title or "Sanity check: cascading randomisation")
    return _save(fig, out)


def entropy_plot(values: Mapping[str, Sequence[float]], out, title: str | None = None,
                 ylabel: str = "saliency entropy (nats)") -> list[Path]:
    """Distribution of per-image saliency entropy per model (violins, as SCAAT shows them)."""
    data = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    data = {k: v[np.isfinite(v)] for k, v in data.items()}
    if not data or any(len(v) == 0 for v in data.values()):
        raise SgtlabError("entropy_plot needs at least one finite value per model")
    fig = Figure(figsize=(1.1 * len(data) + 2.5, 3.8))
    ax = fig.subplots()
    ax.violinplot(list(data.values()), showmedians=True)
    ax.set_xticks(range(1, len(data) + 1), list(data), rotation=30 if len(data) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or "Saliency entropy per image (lower: more concentrated)")
    return _save(fig, out)


def interpretability_figures(results: Mapping[str, Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Every picture for several models: `results[model_name]` is what `interpretability_metrics`
    returned for that model. One map grid per saliency method (rows: models) and one per model
    (rows: methods); curves and entropy violins per saliency method, one line/violin per model."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    if not results:
        raise SgtlabError("no results to draw")
    first = next(iter(results.values()))
    methods = list(first["methods"])
    for method in methods:
        have = {m: r for m, r in results.items() if method in r["examples"]["maps"]}
        paths += saliency_grid(first["examples"]["images"], {m: r["examples"]["maps"][method] for m, r in have.items()},
                               out_dir / f"maps_{method}", labels=_titles(first["examples"]),
                               title=f"{method} saliency maps")
        curves = {m: r["curves"].get(method, {}) for m, r in have.items()}
        for key, fn, what in CURVE_PLOTS:
            sel = {m: c[key] for m, c in curves.items() if key in c}
            if sel:
                paths += fn(sel, out_dir / f"{key}_{method}", title=f"{what} ({method})")
        ent = {m: r["per_image"][method]["entropy"] for m, r in have.items() if "entropy" in r["per_image"][method]}
        if ent:
            paths += entropy_plot(ent, out_dir / f"entropy_{method}", title=f"Saliency entropy ({method})")
    for name, r in results.items():
        if r.get("sanity"):
            san = r["sanity"]
            paths += sanity_plot({m: {**v, "layers": san["layers"], "threshold": san["threshold"]}
                                  for m, v in san["methods"].items()}, out_dir / f"sanity_{_slug(name)}",
                                 title=f"Sanity check, {name}: cascading randomisation ({san['n']} images)")
        if len(r["examples"]["maps"]) > 1:
            paths += saliency_grid(r["examples"]["images"], r["examples"]["maps"], out_dir / f"maps_{_slug(name)}",
                                   labels=_titles(r["examples"]), title=f"{name}: saliency methods")
    return paths


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
