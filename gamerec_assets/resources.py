"""Dagster resources: where data comes from, where artifacts go, and every hyperparameter.

Each setting has a field default here, and `resources_from_env` overrides it from the
environment variable named in the field's description (the seed's names: TRAIN_EPOCHS,
BATCH_SIZE, EMBED_DIM, LR, VAL_K, DATA_DIR, ARTIFACTS_DIR; plus SEED and GAMEREC_*). Run
config (`dagster ... -c run.yaml`, or the UI launchpad) overrides both:
`resources: {training: {config: {lr: 0.01}}}`. Invalid values fail the run when it starts.
"""

import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import dagster as dg
import torch
from pydantic import Field

from gamerec_assets.core.compute import configure_threads, resolve_device
from gamerec_assets.core.index import IndexSettings
from gamerec_assets.core.io import config_fingerprint, file_sha256
from gamerec_assets.core.publish import (
    CATALOG_FILE,
    CHECKPOINT_FILE,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
    ITEM_EMBEDDINGS_FILE,
    METRICS_FILE,
    USER_GAMES_FILE,
    USER_TOWER_FILE,
)
from gamerec_assets.core.sources import (
    InteractionsFileError,
    RawInteractions,
    read_interactions_file,
    read_steam200k,
)
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.core.trainer import TrainConfig


class PathsResource(dg.ConfigurableResource):
    """Folders for processed tables (DATA_DIR) and served artifacts (ARTIFACTS_DIR).

    Steps write into ARTIFACTS_DIR/staging; `faiss_index` publishes the staged files into
    ARTIFACTS_DIR itself, with manifest.json, only once they form one consistent set.
    """

    data_dir: str = Field(default="data", description="DATA_DIR: processed tables (Parquet).")
    artifacts_dir: str = Field(
        default="artifacts",
        description=(
            "ARTIFACTS_DIR: the published set (two_tower.pt, item_emb.npy, user_tower.npz, "
            "metrics.json, index.faiss, index.json, catalog, manifest.json); staging/ below it."
        ),
    )

    def version_fields(self) -> dict[str, object]:
        return {
            "paths.data_dir": str(Path(self.data_dir).resolve()),
            "paths.artifacts_dir": str(Path(self.artifacts_dir).resolve()),
        }

    @property
    def interactions(self) -> Path:
        return Path(self.data_dir) / "interactions.parquet"

    @property
    def train_interactions(self) -> Path:
        return Path(self.data_dir) / "train_interactions.parquet"

    @property
    def val_interactions(self) -> Path:
        return Path(self.data_dir) / "val_interactions.parquet"

    @property
    def staging(self) -> Path:
        """Where each step writes; published into ARTIFACTS_DIR only as a checked, whole set."""
        return Path(self.artifacts_dir) / "staging"

    @property
    def catalog(self) -> Path:
        return self.staging / CATALOG_FILE

    @property
    def user_games(self) -> Path:
        return self.staging / USER_GAMES_FILE

    @property
    def user_tower(self) -> Path:
        return self.staging / USER_TOWER_FILE

    @property
    def training_state(self) -> Path:
        """Per-epoch training state of an unfinished run; removed once the checkpoint is in."""
        return self.staging / "training_state"

    @property
    def checkpoint(self) -> Path:
        return self.staging / CHECKPOINT_FILE

    @property
    def item_embeddings(self) -> Path:
        return self.staging / ITEM_EMBEDDINGS_FILE

    @property
    def metrics(self) -> Path:
        return self.staging / METRICS_FILE

    @property
    def faiss_index(self) -> Path:
        return self.staging / INDEX_FILE

    @property
    def faiss_index_settings(self) -> Path:
        return self.staging / INDEX_SETTINGS_FILE

    def published(self, name: str) -> Path:
        """A file of the published serving set, e.g. `published("index.faiss")`."""
        return Path(self.artifacts_dir) / name


class InteractionSourceResource(dg.ConfigurableResource):
    """The raw interactions: embedded synthetic data, a Steam-200k CSV, or a generic table."""

    kind: Literal["synthetic", "steam200k", "interactions"] = Field(
        default="synthetic", description="GAMEREC_SOURCE: synthetic | steam200k | interactions."
    )
    path: str | None = Field(
        default=None, description="GAMEREC_SOURCE_PATH: the file, for steam200k and interactions."
    )
    synthetic_users: int = Field(default=10_000, gt=0, description="GAMEREC_SYNTHETIC_USERS.")
    synthetic_games: int = Field(default=2_000, gt=0, description="GAMEREC_SYNTHETIC_GAMES.")
    synthetic_interactions: int = Field(
        default=150_000, gt=0, description="GAMEREC_SYNTHETIC_INTERACTIONS (target count)."
    )
    synthetic_seed: int = Field(default=0, description="SEED: synthetic data seed.")

    def synthetic_spec(self) -> SyntheticSpec:
        return SyntheticSpec(
            n_users=self.synthetic_users,
            n_games=self.synthetic_games,
            n_interactions=self.synthetic_interactions,
            seed=self.synthetic_seed,
        )

    def version_fields(self) -> dict[str, object]:
        """The settings that change what `load` returns (the file's bytes are hashed apart)."""
        if self.kind == "synthetic":
            names = (
                "synthetic_users",
                "synthetic_games",
                "synthetic_interactions",
                "synthetic_seed",
            )
            return {"source.kind": self.kind, **{f"source.{n}": getattr(self, n) for n in names}}
        return {"source.kind": self.kind, "source.path": str(Path(self.path or "").resolve())}

    def content_fingerprint(self) -> str:
        """Hash of the input itself: the file's bytes, or the synthetic spec (it is seeded)."""
        if self.kind == "synthetic":
            return config_fingerprint(asdict(self.synthetic_spec()))
        path = self._require_path()
        if not path.is_file():
            raise InteractionsFileError(path, "file not found")
        return file_sha256(path)

    def _require_path(self) -> Path:
        if not self.path:
            raise ValueError(
                f"source kind {self.kind!r} needs a file: set GAMEREC_SOURCE_PATH "
                "or resources.source.config.path"
            )
        return Path(self.path)

    def load(self) -> RawInteractions:
        if self.kind == "synthetic":
            spec = self.synthetic_spec()
            frame = generate_synthetic_interactions(spec)
            return RawInteractions(
                frame=frame,
                description=(
                    f"synthetic:users={spec.n_users},games={spec.n_games},"
                    f"interactions={spec.n_interactions},seed={spec.seed}"
                ),
                stats={"raw_rows": frame.height},
            )
        path = self._require_path()
        if self.kind == "steam200k":
            return read_steam200k(path)
        return read_interactions_file(path)


class SplitResource(dg.ConfigurableResource):
    """How the leave-one-out hold-out game is chosen per user."""

    strategy: Literal["max_playtime", "latest", "random"] = Field(
        default="max_playtime", description="GAMEREC_SPLIT: max_playtime | latest | random."
    )
    seed: int = Field(default=0, description="SEED: used by the random strategy.")

    def version_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"split.strategy": self.strategy}
        if self.strategy == "random":
            fields["split.seed"] = self.seed
        return fields


class TrainingResource(dg.ConfigurableResource):
    """Two-tower hyperparameters. Defaults were chosen on a tuning split of Steam-200k's
    training data (benchmarks/tune_defaults.py); the seed's model is `user_tower=id`,
    `normalize=false`, `temperature=1`, the three corrections off, 5 epochs, lr 0.001, dim 64."""

    epochs: int = Field(default=20, gt=0, description="TRAIN_EPOCHS: at most this many epochs.")
    batch_size: int = Field(default=1024, gt=0, description="BATCH_SIZE: in-batch negatives.")
    embed_dim: int = Field(default=256, gt=0, description="EMBED_DIM.")
    lr: float = Field(default=3e-3, gt=0, description="LR (Adam learning rate).")
    seed: int = Field(default=0, description="SEED: weight init, batch order, tuning split.")
    user_tower: Literal["id", "history", "history+id"] = Field(
        default="history", description="GAMEREC_USER_TOWER: id | history | history+id."
    )
    normalize: bool = Field(default=True, description="GAMEREC_NORMALIZE: cosine scores.")
    temperature: float = Field(default=0.15, gt=0, description="GAMEREC_TEMPERATURE.")
    logq_correction: bool = Field(default=True, description="GAMEREC_LOGQ_CORRECTION.")
    mask_accidental_hits: bool = Field(default=True, description="GAMEREC_MASK_ACCIDENTAL_HITS.")
    weight_decay: float = Field(
        default=0.0, ge=0, description="GAMEREC_WEIGHT_DECAY (AdamW; needs sparse_gradients off)."
    )
    playtime_weighting: bool = Field(default=True, description="GAMEREC_PLAYTIME_WEIGHTING.")
    history_weighting: bool = Field(default=False, description="GAMEREC_HISTORY_WEIGHTING.")
    select_epochs: bool = Field(
        default=True, description="GAMEREC_SELECT_EPOCHS: pick epochs on a tuning split."
    )
    patience: int = Field(default=3, gt=0, description="GAMEREC_PATIENCE: early stopping.")
    refit: bool = Field(
        default=True, description="GAMEREC_REFIT: retrain on all training data afterwards."
    )
    sparse_gradients: bool = Field(
        default=True,
        description=(
            "GAMEREC_SPARSE_GRADIENTS: SparseAdam on the rows each batch touches (cost follows "
            "the batch); false = fused AdamW over whole tables (faster below ~10k games)."
        ),
    )

    epoch_checkpoints: bool = Field(
        default=True,
        description=(
            "GAMEREC_EPOCH_CHECKPOINTS: save the training state after every epoch under "
            "ARTIFACTS_DIR/staging/training_state, so a killed run resumes there. Not part of "
            "the model's version: it changes no weight."
        ),
    )

    nproc: int = Field(
        default=1,
        gt=0,
        description=(
            "TRAIN_NPROC: 1 trains in the run's process; N > 1 launches a torchrun job of N "
            "data-parallel processes through Dagster Pipes (global batch = BATCH_SIZE). Not "
            "part of the model's version: N processes compute the model one would, to float "
            "rounding."
        ),
    )

    def version_fields(self) -> dict[str, object]:
        return {f"training.{k}": v for k, v in asdict(self.train_config()).items()}

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(exclude={"epoch_checkpoints", "nproc"}))


class EvaluationResource(dg.ConfigurableResource):
    """Cut-off of the headline metrics; 10 and 50 are always reported too."""

    k: int = Field(default=20, gt=0, description="VAL_K.")
    ease_baseline: bool = Field(
        default=True, description="GAMEREC_EASE_BASELINE: also score EASE (skipped > 30k games)."
    )
    ease_l2: float = Field(
        default=0.0, ge=0, description="GAMEREC_EASE_L2: EASE's L2 weight; 0 = tune it."
    )
    sample_users: int = Field(
        default=0,
        ge=0,
        description="GAMEREC_EVAL_USERS: evaluate a seeded sample of this many users; 0 = all.",
    )
    seed: int = Field(default=0, description="SEED: which users the sample takes.")

    def version_fields(self) -> dict[str, object]:
        fields = {"evaluation.k": self.k, "evaluation.ease_baseline": self.ease_baseline}
        if self.ease_baseline:
            fields["evaluation.ease_l2"] = self.ease_l2
        if self.sample_users:
            fields["evaluation.sample_users"] = self.sample_users
            fields["evaluation.seed"] = self.seed
        return fields


class IndexResource(dg.ConfigurableResource):
    """FAISS index settings; changing them rebuilds only `faiss_index`."""

    kind: Literal["flat", "hnsw", "ivf"] = Field(
        default="flat", description="GAMEREC_INDEX: flat (exact) | hnsw | ivf."
    )
    metric: Literal["ip", "cosine"] = Field(
        default="ip", description="GAMEREC_INDEX_METRIC: ip (the model's score) | cosine."
    )
    hnsw_m: int = Field(default=32, gt=1, description="GAMEREC_HNSW_M: graph degree.")
    hnsw_ef_construction: int = Field(
        default=200, gt=0, description="GAMEREC_HNSW_EF_CONSTRUCTION: build-time beam width."
    )
    hnsw_ef_search: int = Field(
        default=128, gt=0, description="GAMEREC_HNSW_EF_SEARCH: query-time beam width."
    )
    ivf_nlist: int = Field(
        default=0, ge=0, description="GAMEREC_IVF_NLIST: inverted lists; 0 = about 4*sqrt(n)."
    )
    ivf_nprobe: int = Field(default=32, gt=0, description="GAMEREC_IVF_NPROBE: lists searched.")

    def index_settings(self) -> IndexSettings:
        return IndexSettings(
            kind=self.kind,
            metric=self.metric,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construction=self.hnsw_ef_construction,
            hnsw_ef_search=self.hnsw_ef_search,
            ivf_nlist=self.ivf_nlist,
            ivf_nprobe=self.ivf_nprobe,
        )

    def version_fields(self) -> dict[str, object]:
        return {f"index.{k}": v for k, v in self.index_settings().relevant_fields().items()}


class ComputeResource(dg.ConfigurableResource):
    """Device and thread count for torch and FAISS, chosen in one place."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="GAMEREC_DEVICE: auto (CUDA when available) | cpu | cuda."
    )
    num_threads: int = Field(
        default=0, ge=0, description="GAMEREC_NUM_THREADS: torch and FAISS threads; 0 = all cores."
    )

    def setup(self) -> torch.device:
        """Apply the thread count and return the torch device to use."""
        configure_threads(self.num_threads or None)
        return resolve_device(self.device)


# Environment variable -> (resource key, field). The seed's names where it had them.
ENV_SETTINGS: dict[str, tuple[str, str]] = {
    "DATA_DIR": ("paths", "data_dir"),
    "ARTIFACTS_DIR": ("paths", "artifacts_dir"),
    "GAMEREC_SOURCE": ("source", "kind"),
    "GAMEREC_SOURCE_PATH": ("source", "path"),
    "GAMEREC_SYNTHETIC_USERS": ("source", "synthetic_users"),
    "GAMEREC_SYNTHETIC_GAMES": ("source", "synthetic_games"),
    "GAMEREC_SYNTHETIC_INTERACTIONS": ("source", "synthetic_interactions"),
    "GAMEREC_SPLIT": ("split", "strategy"),
    "TRAIN_EPOCHS": ("training", "epochs"),
    "BATCH_SIZE": ("training", "batch_size"),
    "EMBED_DIM": ("training", "embed_dim"),
    "LR": ("training", "lr"),
    "GAMEREC_USER_TOWER": ("training", "user_tower"),
    "GAMEREC_NORMALIZE": ("training", "normalize"),
    "GAMEREC_TEMPERATURE": ("training", "temperature"),
    "GAMEREC_LOGQ_CORRECTION": ("training", "logq_correction"),
    "GAMEREC_MASK_ACCIDENTAL_HITS": ("training", "mask_accidental_hits"),
    "GAMEREC_WEIGHT_DECAY": ("training", "weight_decay"),
    "GAMEREC_PLAYTIME_WEIGHTING": ("training", "playtime_weighting"),
    "GAMEREC_HISTORY_WEIGHTING": ("training", "history_weighting"),
    "GAMEREC_SELECT_EPOCHS": ("training", "select_epochs"),
    "GAMEREC_PATIENCE": ("training", "patience"),
    "GAMEREC_REFIT": ("training", "refit"),
    "GAMEREC_SPARSE_GRADIENTS": ("training", "sparse_gradients"),
    "GAMEREC_EPOCH_CHECKPOINTS": ("training", "epoch_checkpoints"),
    "TRAIN_NPROC": ("training", "nproc"),
    "VAL_K": ("evaluation", "k"),
    "GAMEREC_EASE_BASELINE": ("evaluation", "ease_baseline"),
    "GAMEREC_EASE_L2": ("evaluation", "ease_l2"),
    "GAMEREC_EVAL_USERS": ("evaluation", "sample_users"),
    "GAMEREC_INDEX": ("index", "kind"),
    "GAMEREC_INDEX_METRIC": ("index", "metric"),
    "GAMEREC_HNSW_M": ("index", "hnsw_m"),
    "GAMEREC_HNSW_EF_CONSTRUCTION": ("index", "hnsw_ef_construction"),
    "GAMEREC_HNSW_EF_SEARCH": ("index", "hnsw_ef_search"),
    "GAMEREC_IVF_NLIST": ("index", "ivf_nlist"),
    "GAMEREC_IVF_NPROBE": ("index", "ivf_nprobe"),
    "GAMEREC_DEVICE": ("compute", "device"),
    "GAMEREC_NUM_THREADS": ("compute", "num_threads"),
}
SEED_FIELDS = (
    ("source", "synthetic_seed"),
    ("split", "seed"),
    ("training", "seed"),
    ("evaluation", "seed"),
)

RESOURCE_CLASSES: dict[str, type[dg.ConfigurableResource]] = {
    "paths": PathsResource,
    "source": InteractionSourceResource,
    "split": SplitResource,
    "training": TrainingResource,
    "evaluation": EvaluationResource,
    "index": IndexResource,
    "compute": ComputeResource,
}


def env_variable_names() -> dict[str, str]:
    """'training.lr' -> 'LR': how each setting is named where users set it."""
    names = {f"{key}.{field}": variable for variable, (key, field) in ENV_SETTINGS.items()}
    names.update({f"{key}.{field}": "SEED" for key, field in SEED_FIELDS})
    return names


def resources_from_env(
    environ: Mapping[str, str] | None = None,
) -> dict[str, dg.ConfigurableResource]:
    """Build every resource, taking each setting from its env var when set (else the default).

    Values are validated by the resource classes: a bad one (EMBED_DIM=0, GAMEREC_SOURCE=foo)
    raises here, naming the field, before anything runs.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, dict[str, str]] = {key: {} for key in RESOURCE_CLASSES}
    if environ.get("SEED", "") != "":
        for key, field in SEED_FIELDS:
            settings[key][field] = environ["SEED"]
    for variable, (key, field) in ENV_SETTINGS.items():
        if environ.get(variable, "") != "":
            settings[key][field] = environ[variable]
    resources = {}
    for key, cls in RESOURCE_CLASSES.items():
        try:
            resources[key] = cls.model_validate(settings[key])
        except Exception as error:  # pydantic.ValidationError; re-raised with the env var names
            names = [v for v, (k, _) in ENV_SETTINGS.items() if k == key]
            if any(k == key for k, _ in SEED_FIELDS) and environ.get("SEED", "") != "":
                names.append("SEED")
            raise ValueError(
                f"invalid setting for {key} (from {', '.join(names)}): {error}"
            ) from error
    return resources
