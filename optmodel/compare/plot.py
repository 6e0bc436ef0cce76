"""The comparison plot: one panel per accuracy metric, size on x, the base model as a star,
completed runs as dots (the Pareto front joined by a line), runs that did not complete as
grey crosses. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import List

from optmodel.compare.table import SHIPPABLE, Row
from optmodel.facts import measures

SIZE_LABELS = {"model_bytes": "model size (MB, weights at their stored bits)", "effective_bits": "effective weight bits",
               "parameters": "parameters (M)", "active_parameters": "active parameters (M)"}
SCALE = {"model_bytes": 1e-6, "parameters": 1e-6, "active_parameters": 1e-6, "effective_bits": 1.0}


def plot(rows: List[Row], metrics: List[str], path: Path, size: str = "model_bytes") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = SCALE[size]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        placed = [r for r in rows if metric in r.values and measures.is_number(r.sizes.get(size))]
        for r in placed:
            x, y = r.sizes[size] * scale, r.values[metric]
            if r.is_base:
                ax.plot(x, y, "*", color="black", markersize=14, label="base model")
            elif r.status == SHIPPABLE:
                ax.plot(x, y, "o", color="tab:blue" if metric not in r.pareto else "tab:red", markersize=7)
            else:
                ax.plot(x, y, "x", color="gray", markersize=8)
            ax.annotate(r.kind if not r.is_base else "base", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color="gray" if r.status not in (SHIPPABLE, "reference") else "black")
        front = sorted((r.sizes[size] * scale, r.values[metric]) for r in placed if metric in r.pareto)
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="tab:red", alpha=0.6, label="Pareto front")
        ax.plot([], [], "o", color="tab:blue", label="completed")
        if any(r.status not in (SHIPPABLE, "reference") for r in placed):
            ax.plot([], [], "x", color="gray", label="gated / failed")
        better = "lower is better" if measures.lower_is_better(metric) else "higher is better"
        ax.set_xlabel(SIZE_LABELS[size])
        ax.set_ylabel(f"{metric} ({better})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    runs = [r for r in rows if not r.is_base]
    fig.suptitle(f"optmodel compare: {len(runs)} run(s), "
                 f"{sum(r.status == SHIPPABLE for r in runs)} completed", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)
