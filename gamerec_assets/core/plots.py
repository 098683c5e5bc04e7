"""PNG charts for the Dagster UI: the training curve and the search's trials, drawn off-screen."""

import io

import matplotlib

from gamerec_assets.core.settings import Tuning

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def training_curve_png(
    losses: dict[str, list[float]], tuning_ndcg: list[float] | None = None, k: int = Tuning().k
) -> bytes:
    """Loss per epoch for each phase (e.g. tune, refit) and, on a second axis, the tuning
    split's NDCG@k per epoch, as PNG bytes."""
    figure, loss_axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    for phase, values in losses.items():
        epochs = range(1, len(values) + 1)
        loss_axis.plot(epochs, values, marker="o", label=f"{phase} loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("InfoNCE loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if tuning_ndcg:
        ndcg_axis = loss_axis.twinx()
        epochs = range(1, len(tuning_ndcg) + 1)
        ndcg_axis.plot(epochs, tuning_ndcg, color="tab:green", marker="s", label=f"tuning NDCG@{k}")
        ndcg_axis.set_ylabel(f"NDCG@{k}")
        more_handles, more_labels = ndcg_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def search_trials_png(trials: list[dict], k: int = Tuning().k) -> bytes:
    """Each trial's tuning NDCG@k in order (pruned trials at their last score, hollow), and the
    best so far, as PNG bytes: how the search went."""
    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    done = [(t["number"], t["value"]) for t in trials if t["value"] is not None]
    pruned = [(t["number"], t["last_score"]) for t in trials if t["value"] is None]
    if done:
        axis.plot(*zip(*done), "o", color="tab:blue", label="trial")
        best, running = [], float("-inf")
        for _, value in done:
            running = max(running, value)
            best.append(running)
        axis.step([n for n, _ in done], best, where="post", color="tab:green", label="best so far")
    pruned = [(n, v) for n, v in pruned if v is not None]
    if pruned:
        axis.plot(*zip(*pruned), "o", mfc="none", color="tab:gray", label="pruned")
    axis.set_xlabel("trial")
    axis.set_ylabel(f"tuning NDCG@{k}")
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
