"""Plots of continual-learning results (matplotlib, headless)."""

from pathlib import Path

import numpy as np

from nte._internal._io import atomic_savefig


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")
    _plt().close(fig)


def accuracy_matrix(R: np.ndarray, path: Path, title: str) -> None:
    """Heatmap of the mean (over seeds) accuracy matrix R[t, j]."""
    plt = _plt()
    mean = np.nanmean(R, axis=0)
    T = mean.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * T, 0.8 + 0.6 * T))
    im = ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
    for t in range(T):
        for j in range(T):
            color = "white" if mean[t, j] < 0.6 else "black"
            ax.text(j, t, f"{mean[t, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(T), [str(j + 1) for j in range(T)])
    ax.set_yticks(range(T), [str(t + 1) for t in range(T)])
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task t")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def per_task_accuracy(R: np.ndarray, path: Path, title: str) -> None:
    """Accuracy on each task j (mean ± std over seeds) vs the number of tasks seen."""
    plt = _plt()
    T = R.shape[-1]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    seen = np.arange(1, T + 1)
    for j in range(T):
        mean, std = R[:, j:, j].mean(0), R[:, j:, j].std(0)
        ax.errorbar(seen[j:], mean, yerr=std, marker="o", ms=3, capsize=2, label=f"task {j + 1}")
    avg = [R[:, t, : t + 1].mean() for t in range(T)]
    ax.plot(seen, avg, "k--", lw=2, label="mean over seen tasks")
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(seen)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def compare(results: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Mean accuracy over the tasks seen so far, one line per run (mean ± std over seeds)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, R in results.items():
        T = R.shape[-1]
        avg = np.stack([R[:, t, : t + 1].mean(-1) for t in range(T)], -1)
        ax.errorbar(
            np.arange(1, T + 1), avg.mean(0), yerr=avg.std(0), marker="o", capsize=2, label=name
        )
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("mean accuracy on seen tasks")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
