"""SPP's two figures: the solution path (each unit's gamma against iteration) and accuracy against ratio."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ...core.structure import GROUPS  # noqa: E402
from .record import PathRecord  # noqa: E402

_TITLES = {"qk": "query-key dims", "vo": "value-output dims", "ffn": "FFN units"}


def plot_solution_path(record: PathRecord, path: str | Path, max_lines: int = 400) -> Path:
    """One panel per group: gamma of every unit (up to ``max_lines``, the earliest entries first)."""
    fig, axes = plt.subplots(1, len(GROUPS), figsize=(5 * len(GROUPS), 3.6), squeeze=False)
    steps = record.path_steps
    priority = record.priority()
    for ax, group in zip(axes[0], GROUPS):
        gammas = record.gamma_path.get(group)
        if gammas is None or not steps:
            ax.set_axis_off()
            continue
        flat = gammas.float().reshape(len(steps), -1)
        order = torch.argsort(priority[group].flatten(), descending=True)[:max_lines]
        ax.plot(steps, flat[:, order].numpy(), linewidth=0.6, alpha=0.7)
        entered = int((record.entry[group] >= 0).sum())
        ax.set_title(f"{_TITLES[group]}: {entered}/{flat.shape[1]} entered")
        ax.set_xlabel("iteration")
        ax.set_ylabel("gamma")
    fig.suptitle(f"SPP solution path ({record.granularity} masks, {record.steps} iterations)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_accuracy_vs_ratio(series: Mapping[str, Sequence[Mapping[str, Any]]], metric: str, path: str | Path,
                           split: str = "dev") -> Path:
    """``series``: name -> rows with ``ratio`` and ``scores[split][metric]`` (or mean/std from the benchmark)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rows in series.items():
        xs = [r["ratio"] for r in rows]
        ys = [r["mean"] if "mean" in r else r["scores"][split][metric] for r in rows]
        errs = [r.get("std", 0.0) for r in rows]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=name)
    ax.set_xlabel("ratio of paired inner dimensions removed")
    ax.set_ylabel(f"{split} {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
