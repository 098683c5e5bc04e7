"""Fixtures shared by the whole suite: small resource sets in temporary folders."""

from pathlib import Path

import pytest

from gamerec_assets.resources import (
    ComputeResource,
    EvaluationResource,
    InteractionSourceResource,
    PathsResource,
    SplitResource,
    TrainingResource,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
STEAM_200K = REPO_ROOT.parent / "shared" / "data" / "steam-200k.csv.gz"
requires_steam_200k = pytest.mark.skipif(
    not STEAM_200K.exists(), reason=f"real data set not found at {STEAM_200K}"
)


def small_resources(tmp_path: Path, **source_overrides) -> dict:
    """Every resource, pointed at tmp_path, on a synthetic data set that trains in seconds."""
    source = {
        "kind": "synthetic",
        "synthetic_users": 400,
        "synthetic_games": 120,
        "synthetic_interactions": 6_000,
        **source_overrides,
    }
    return {
        "paths": PathsResource(
            data_dir=str(tmp_path / "data"), artifacts_dir=str(tmp_path / "artifacts")
        ),
        "source": InteractionSourceResource(**source),
        "split": SplitResource(),
        "training": TrainingResource(epochs=3, batch_size=256, embed_dim=16, lr=0.01),
        "evaluation": EvaluationResource(k=20),
        "compute": ComputeResource(device="cpu", num_threads=2),
    }


@pytest.fixture
def resources(tmp_path: Path) -> dict:
    return small_resources(tmp_path)
