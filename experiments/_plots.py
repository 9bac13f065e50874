"""Plots of continual-learning results (matplotlib, headless)."""

from pathlib import Path

import numpy as np

from nte._internal._io import atomic_savefig


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seeds(n: int, most: int | None = None) -> str:
    """'3 seeds'; with `most` > `n` the range, '1–3 seeds' (points with different counts)."""
    if most is not None and most > n:
        return f"{n}–{most} seeds"
    return f"{n} seed{'s' if n != 1 else ''}"


def _caption(fig, ax, title: str, caption: str) -> None:
    """The title (the settings) and a caption under the axes (what the marks and bars are)."""
    ax.set_title(title, fontsize=9)
    fig.text(0.5, -0.03, caption, ha="center", va="top", fontsize=8)


def _integer_ticks(ax, T: int) -> None:
    ax.set_xticks(range(1, T + 1), [str(t) for t in range(1, T + 1)])


def _save(fig, path: Path) -> None:
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")
    _plt().close(fig)


def accuracy_matrix(R: np.ndarray, path: Path, title: str) -> None:
    """Heatmap of the mean (over seeds) accuracy matrix R[t, j] (`title`: the settings)."""
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
    _caption(fig, ax, title, f"cells: mean over {_seeds(R.shape[0])}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def per_task_accuracy(R: np.ndarray, path: Path, title: str) -> None:
    """Accuracy on each task j (mean ± std over seeds) vs the number of tasks seen
    (`title`: the settings)."""
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
    _integer_ticks(ax, T)
    _caption(fig, ax, title, f"points: mean, error bars: std over {_seeds(R.shape[0])}")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def compare(results: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Mean accuracy over the tasks seen so far, one line per run (mean ± std over seeds;
    `title`: the settings)."""
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
    _integer_ticks(ax, max(R.shape[-1] for R in results.values()))
    seeds = max(R.shape[0] for R in results.values())
    _caption(fig, ax, title, f"points: mean, error bars: std over {_seeds(seeds)}")
    ax.legend(fontsize=8)
    _save(fig, path)
