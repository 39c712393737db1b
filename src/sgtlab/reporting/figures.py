"""The report's robustness figures (PNG + PDF)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgtlab.reporting.summary import mean_std  # noqa: E402
from sgtlab.reporting.data import ATTACK_NAMES, by_label, curve_stats, is_nested, labels_in_order, robust_columns  # noqa: E402
from sgtlab.reporting.eps import eps_text, is_colour  # noqa: E402
from sgtlab.reporting.flags import flagged_labels, marked, under_trained  # noqa: E402


def save_figure(fig, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{stem}.png"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(folder / f"{stem}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def robustness_figure(rows: list[dict], folder: Path) -> Path | None:
    cols = robust_columns(rows)
    if not cols:
        return None
    groups, labels = by_label(rows), labels_in_order(rows)
    bad = flagged_labels(rows, under_trained(rows))  # marked † in the legend: under-trained
    datasets = {r.get("dataset") for r in rows}
    ds = datasets.pop() if len(datasets) == 1 else None
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.6), squeeze=False, sharey=True)
    for ax, (attack, eps_list) in zip(axes[0], cols.items()):
        for label in labels:
            xs, ms, sds = curve_stats(groups[label], attack, eps_list)
            line, = ax.plot(xs, ms, marker="o", ms=3, label=marked(label, bad))
            ax.fill_between(xs, [m - s for m, s in zip(ms, sds)], [m + s for m, s in zip(ms, sds)],
                            color=line.get_color(), alpha=0.18, lw=0)
        ax.set_title(ATTACK_NAMES.get(attack, attack.upper()))
        ax.set_xlabel("eps (L-inf, pixel units)")
        if is_colour(ds):  # ticks at the grid, as k/255
            ticks = [0.0, *eps_list]
            ax.set_xticks(ticks, [eps_text(e, ds) for e in ticks], rotation=45, fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    n = max(len(g) for g in groups.values())
    how = "nested sweep: best over eps' ≤ eps" if is_nested(rows) else "each eps from scratch"
    fig.suptitle(f"Robust accuracy (mean over seeds, band: ±1 sd; up to {n} seeds; {how})", fontsize=10)
    return save_figure(fig, folder, "robust_accuracy")


def clean_accuracy_figure(rows: list[dict], folder: Path) -> Path:
    groups, labels = by_label(rows), labels_in_order(rows)
    bad = flagged_labels(rows, under_trained(rows))
    stats = [mean_std([r["clean_accuracy"] for r in groups[l]]) for l in labels]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 3.2))
    ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), [marked(l, bad) for l in labels], rotation=30, ha="right", fontsize=8)
    lo = min(m - s for m, s in stats)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("clean test accuracy")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, folder, "clean_accuracy")
