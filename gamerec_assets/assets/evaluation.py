"""Stage 4, evaluation: held-out metrics of the model beside the baselines, on the protocol."""

import json
import time

import dagster as dg

from gamerec_assets.assets.common import content_version, markdown_table
from gamerec_assets.core.baselines import EASE_MAX_ITEMS
from gamerec_assets.core.evaluation import (
    EvaluationData,
    cutoff_warning,
    evaluate_als,
    evaluate_ease,
    evaluate_popularity,
    evaluate_two_tower,
    require_cutoff_below_catalog,
    tune_als,
    tune_ease_l2,
)
from gamerec_assets.core.io import write_json_atomic
from gamerec_assets.core.metrics import DEFAULT_KS
from gamerec_assets.core.settings import Tuning
from gamerec_assets.core.splits import read_split_frame
from gamerec_assets.core.training.checkpoint import (
    checkpoint_config,
    checkpoint_fingerprint,
    load_checkpoint,
)
from gamerec_assets.resources import (
    ComputeResource,
    EvaluationResource,
    PathsResource,
    SplitResource,
    TuningResource,
)
from gamerec_assets.versioning import effective_version

MODEL_BEATS_POPULARITY = "model_beats_popularity"


@dg.asset(
    deps=["item_embeddings", "two_tower_checkpoint", "train_interactions", "val_interactions"],
    group_name="evaluation",
    kinds={"pytorch"},
    description=(
        "metrics.json: Recall@K, NDCG@K (K = VAL_K, 10, 50) and MRR over the full catalog, "
        "each user's training games masked, for the model and the baselines: popularity, EASE "
        "(up to 30,000 games) and implicit ALS, their weights tuned on the tuning split; a "
        "baseline that cannot run says why under baselines_skipped."
    ),
)
def eval_metrics(
    context: dg.AssetExecutionContext,
    evaluation: EvaluationResource,
    tuning: TuningResource,
    split: SplitResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    device, files = compute.setup(), paths.settings()
    model, checkpoint = load_checkpoint(files.checkpoint, device)
    require_cutoff_below_catalog(evaluation.k, model.n_items)  # VAL_K alone may have changed
    warning = cutoff_warning(evaluation.k, model.n_items)
    if warning:
        context.log.warning(warning)
    config = checkpoint_config(checkpoint)
    all_users = EvaluationData(
        train=read_split_frame(files.train_interactions),
        val=read_split_frame(files.val_interactions),
        n_users=model.n_users,
        n_items=model.n_items,
    )
    data = all_users.sample_users(evaluation.sample_users, evaluation.seed)
    if data is not all_users:
        context.log.info(
            f"evaluating a sample of {len(data.eval_users)} of {len(all_users.eval_users)} users "
            f"(GAMEREC_EVAL_USERS, seed {evaluation.seed})"
        )
    ks = tuple(sorted({*DEFAULT_KS, evaluation.k}))
    model_metrics = evaluate_two_tower(model, config, data, ks)
    baselines, skipped, seconds = score_baselines(
        context, data, all_users, ks, evaluation, split, tuning.settings()
    )
    report = {
        **model_metrics,
        "k": evaluation.k,
        "n_eval_users": len(data.eval_users),
        "n_heldout_games": data.val.height,
        "n_users_with_heldout": len(all_users.eval_users),
        "n_games": data.n_items,
        "baselines": baselines,
        "baselines_skipped": skipped,
        "checkpoint_config": checkpoint["config"],
        "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint),
        "best_epoch": checkpoint["best_epoch"],
    }
    write_json_atomic(files.metrics, report)
    headline = [f"recall@{evaluation.k}", f"ndcg@{evaluation.k}"]
    for name, metrics in [("model", model_metrics), *baselines.items()]:
        context.log.info(f"{name}: " + ", ".join(f"{m}={metrics[m]:.4f}" for m in headline))
    version = effective_version(
        context, "eval_metrics", {"evaluation": evaluation, "tuning": tuning}
    )
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **metrics_metadata(model_metrics, baselines),
            "n_eval_users": len(data.eval_users),
            "n_heldout_games": data.val.height,
            "n_users_with_heldout": len(all_users.eval_users),
            **{f"{name}_fit_seconds": round(value, 3) for name, value in seconds.items()},
            "baselines_skipped": dg.MetadataValue.json(skipped),
            "path": dg.MetadataValue.path(str(files.metrics)),
        },
        data_version=content_version(files.metrics),
    )


def score_baselines(
    context: dg.AssetExecutionContext,
    data: EvaluationData,
    all_users: EvaluationData,
    ks: tuple[int, ...],
    evaluation: EvaluationResource,
    split: SplitResource,
    tuning: Tuning,
) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, float]]:
    """Each baseline's metrics on the same protocol (its weights tuned on the tuning split),
    why any was skipped, and the seconds each took to tune and fit."""
    baselines: dict[str, dict[str, float]] = {"popularity": evaluate_popularity(data, ks)}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    if not evaluation.ease_baseline:
        skipped["ease"] = "turned off (GAMEREC_EASE_BASELINE=false)"
    elif data.n_items > EASE_MAX_ITEMS:
        skipped["ease"] = (
            f"{data.n_items:,} games is above EASE's limit of {EASE_MAX_ITEMS:,}: its dense "
            "games x games matrix and inverse would not fit in memory"
        )
    else:
        started = time.perf_counter()
        l2 = evaluation.ease_l2 or tune_ease_l2(all_users, split.strategy, split.seed, tuning)
        baselines["ease"] = {**evaluate_ease(data, l2, ks), "l2": l2}
        seconds["ease"] = time.perf_counter() - started
    if not evaluation.als_baseline:
        skipped["als"] = "turned off (GAMEREC_ALS_BASELINE=false)"
    else:
        started = time.perf_counter()
        chosen = tune_als(all_users, split.strategy, split.seed, tuning)
        baselines["als"] = {**evaluate_als(data, seed=split.seed, ks=ks, **chosen), **chosen}
        seconds["als"] = time.perf_counter() - started
    for name, reason in skipped.items():
        context.log.warning(f"{name.upper()} baseline skipped: {reason}")
    return baselines, skipped, seconds


def metrics_metadata(
    model_metrics: dict[str, float], baselines: dict[str, dict[str, float]]
) -> dict[str, object]:
    """The metrics as numbers the UI plots across runs, and as one table beside the baselines."""
    table = [
        {
            "metric": name,
            "model": f"{value:.4f}",
            **{baseline: f"{scores[name]:.4f}" for baseline, scores in baselines.items()},
        }
        for name, value in model_metrics.items()
    ]
    return {
        **model_metrics,
        **{
            f"{baseline}_{name}": value
            for baseline, scores in baselines.items()
            for name, value in scores.items()
            if name in model_metrics
        },
        "metrics": dg.MetadataValue.md(markdown_table(table)),
    }


@dg.asset_check(
    asset=eval_metrics,
    name=MODEL_BEATS_POPULARITY,
    blocking=True,
    description=(
        "The model's Recall@VAL_K is above the popularity baseline's; a model that is not "
        "blocks the index. Reports the ratios to popularity and to EASE."
    ),
)
def model_beats_popularity(paths: PathsResource) -> dg.AssetCheckResult:
    report = json.loads(paths.settings().metrics.read_text(encoding="utf-8"))
    passed, description, metadata = popularity_gate(report)
    return dg.AssetCheckResult(passed=passed, description=description, metadata=metadata)


def popularity_gate(report: dict) -> tuple[bool, str | None, dict[str, float]]:
    """Whether a metrics report's model beats popularity at Recall@VAL_K, why not, and the
    ratios to the baselines."""
    key, ndcg = f"recall@{report['k']}", f"ndcg@{report['k']}"
    model, popularity = report[key], report["baselines"]["popularity"][key]
    metadata: dict[str, float] = {
        key: model,
        f"popularity_{key}": popularity,
        "ratio_to_popularity": model / max(popularity, 1e-12),
    }
    for name in ("ease", "als"):
        baseline = report["baselines"].get(name)
        if baseline:
            metadata[f"ratio_to_{name}_{key}"] = model / max(baseline[key], 1e-12)
            metadata[f"ratio_to_{name}_{ndcg}"] = report[ndcg] / max(baseline[ndcg], 1e-12)
    passed = model > popularity
    description = (
        None if passed else f"model {key} {model:.4f} is not above popularity {popularity:.4f}"
    )
    return passed, description, metadata
