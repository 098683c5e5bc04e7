"""Stage 6, publishing: the checked serving set, switched to whole in ARTIFACTS_DIR.

Downstream of the index and the metrics, so Dagster's blocking checks gate it: in a run where
a model loses to popularity, or an index misses games, this step does not run and serving
goes on from the last published set. Run on its own, it refuses as well when a blocking check
failed in its latest run. It then checks that the staged files form one consistent set (what
no single asset check sees: a checkpoint and the embeddings of another) and publishes them
as a new set with manifest.json, made current in one rename (see `core.publish`).
"""

import dagster as dg

from gamerec_assets.assets import evaluation, ingestion, serving, splits, training, tuning
from gamerec_assets.assets.common import markdown_table
from gamerec_assets.core.io import config_fingerprint
from gamerec_assets.core.manifest import MANIFEST_FILE, SETS_FOLDER, ArtifactSetError
from gamerec_assets.core.publish import publish_artifacts, staged_set_lineage
from gamerec_assets.core.recommend import Recommender, sample_recommendations
from gamerec_assets.dagster_adapter import failed_checks
from gamerec_assets.resources import PathsResource
from gamerec_assets.versioning import CODE_VERSION_TAG, effective_version

UPSTREAM_STAGES = (ingestion, splits, tuning, training, evaluation, serving)
GATING_CHECKS = sorted(
    (
        spec.key
        for checks in dg.load_asset_checks_from_modules(UPSTREAM_STAGES)
        for spec in checks.check_specs
        if spec.blocking
    ),
    key=lambda key: key.to_user_string(),
)
"""Every blocking check of the stages before publishing."""


@dg.asset(
    deps=["faiss_index", "eval_metrics"],
    group_name="serving",
    kinds={"file"},
    description=(
        "The published serving set in ARTIFACTS_DIR: catalog, players' games, checkpoint, "
        "embeddings, user tower, metrics and index, with manifest.json (SHA-256 and lineage of "
        "every file). Runs only when every blocking check upstream passed."
    ),
)
def serving_set(context: dg.AssetExecutionContext, paths: PathsResource) -> dg.MaterializeResult:
    files = paths.settings()
    failed = failed_checks(context.instance, GATING_CHECKS)
    if failed:
        reasons = "; ".join(
            f"{check.name} on {check.asset_key.to_user_string()} failed ({why})"
            for check, why in failed.items()
        )
        raise dg.Failure(f"not publishing: {reasons}; the published set stays as it was")
    try:
        staged = staged_set_lineage(files.staging)
    except ArtifactSetError as error:
        raise dg.Failure(f"not publishing: {error}") from error
    version = effective_version(context, "serving_set", {})
    manifest = publish_artifacts(
        files.staging,
        files.published,
        staged,
        run_id=context.run.run_id,
        config_fingerprint=version["metadata"]["config_fingerprint"],
        code_version=version["tags"][CODE_VERSION_TAG],
        keep=files.keep_sets,
    )
    published = files.published / SETS_FOLDER / manifest["set"]
    context.log.info(f"published {len(manifest['files'])} files as {published}, now current")
    samples = sample_recommendations(Recommender.load(files.published))
    hashes = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "files": dg.MetadataValue.json(hashes),
            "sample_recommendations": dg.MetadataValue.md(markdown_table(samples)),
            "set": manifest["set"],
            "manifest": dg.MetadataValue.path(str(published / MANIFEST_FILE)),
        },
        data_version=dg.DataVersion(config_fingerprint(hashes)[:16]),
    )
