"""Every setting of the project, declared once: name, type, default, bounds, variable, doc.

Each group of settings is a frozen dataclass whose fields are made with `setting(...)`; the
group is also the name of the Dagster resource that carries it. Everything else derives from
these declarations:
- the Dagster resources and their launchpad descriptions (`gamerec_assets.resources`);
- reading the environment (`settings_from_env`), where one variable may set several fields
  (SEED);
- validation with one-line errors naming the variable, the value and what is allowed
  (`SettingError`), whether a value comes from the environment, run config or code;
- which settings change a result, for Dagster's code versions (`version_fields`);
- the README's configuration table (`settings_table`, compared with the README by a test).

The defaults are the project's tuned ones: `TrainConfig()` is the model the graph trains.
"""

import datetime
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from gamerec_assets.core.manifest import (
    CATALOG_FILE,
    CHECKPOINT_FILE,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
    ITEM_EMBEDDINGS_FILE,
    METRICS_FILE,
    USER_GAMES_FILE,
    USER_TOWER_FILE,
)

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting with a value that is not allowed; the message is one line naming it."""


@dataclass(frozen=True)
class SettingSpec:
    """What a field declares beyond its type and default."""

    env: str
    doc: str
    gt: float | None = None
    ge: float | None = None
    choices: tuple[str, ...] | None = None
    versioned: bool = True
    """False for settings that change how a step runs but not what it computes."""
    default_shown: str | None = None
    """How the README shows the default, when the value alone does not say it."""
    reason: str | None = None
    """Why the bound is what it is, added to the error (a bound that is not obvious)."""


def setting(
    default: Any,
    env: str,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    choices: tuple[str, ...] | None = None,
    versioned: bool = True,
    default_shown: str | None = None,
    reason: str | None = None,
) -> Any:
    """A dataclass field declaring one setting."""
    spec = SettingSpec(env, doc, gt, ge, choices, versioned, default_shown, reason)
    return field(default=default, metadata={"setting": spec})


def spec_of(item: Field) -> SettingSpec:
    return item.metadata["setting"]


@dataclass(frozen=True)
class SettingsGroup:
    """A group of settings: validated on construction, readable from the environment."""

    group: ClassVar[str]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            _validate(self.group, item, hints[item.name], getattr(self, item.name))

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {item.name: hints[item.name] for item in fields(cls)}

    @classmethod
    def label(cls, name: str) -> str:
        """How a field is named to users: its variable and its place in run config."""
        return f"{spec_of(_field(cls, name)).env} ({cls.group}.{name})"

    def version_fields(self) -> dict[str, Any]:
        """The settings that change what the group's steps compute, keyed `group.field`."""
        return {
            f"{self.group}.{item.name}": getattr(self, item.name)
            for item in fields(self)
            if spec_of(item).versioned
        }

    def explicit_fields(self, environ: Mapping[str, str] | None = None) -> set[str]:
        """The settings given explicitly: set in the environment, or (run config, code)
        different from the declared default."""
        from_env = settings_from_env(type(self), environ)
        return {
            item.name
            for item in fields(self)
            if item.name in from_env or getattr(self, item.name) != item.default
        }

    def model_dict(self) -> dict[str, Any]:
        """The versioned fields by name (what a checkpoint records of its training run)."""
        return {
            item.name: getattr(self, item.name) for item in fields(self) if spec_of(item).versioned
        }


def _field(cls: type, name: str) -> Field:
    return next(item for item in fields(cls) if item.name == name)


def _describe_allowed(spec: SettingSpec, kind: Any) -> str:
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    if kind is bool:
        return "true or false"
    noun = "an integer" if kind is int else "a finite number"
    if spec.gt is not None:
        return f"{noun} > {spec.gt:g}"
    if spec.ge is not None:
        return f"{noun} >= {spec.ge:g}"
    return noun


def _validate(group: str, item: Field, kind: Any, value: Any) -> None:
    spec = spec_of(item)
    optional = typing.get_origin(kind) in (typing.Union, type(int | None)) and type(None) in (
        typing.get_args(kind)
    )
    base = next((k for k in typing.get_args(kind) if k is not type(None)), kind)
    if value is None and optional:
        return
    label = f"{spec.env}={value!r} ({group}.{item.name})"
    allowed = _describe_allowed(spec, base)
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if ok and spec.choices is not None:
        ok = value in spec.choices
    if ok and spec.gt is not None:
        ok = value > spec.gt
    if ok and spec.ge is not None:
        ok = value >= spec.ge
    if not ok:
        why = f" ({spec.reason})" if spec.reason else ""
        raise SettingError(f"{label}: expected {allowed}{why}")


def parse_setting(cls: type[SettingsGroup], name: str, text: str) -> Any:
    """A setting's value from its environment text, or a one-line `SettingError`."""
    item = _field(cls, name)
    spec, kind = spec_of(item), cls.field_types()[name]
    base = next((k for k in typing.get_args(kind) if k is not type(None)), kind)
    allowed = _describe_allowed(spec, base)
    stripped = text.strip()
    try:
        if base is bool:
            if stripped.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            return stripped.lower() in TRUE_WORDS
        if base is int:
            return int(stripped)
        if base is float:
            return float(stripped)
    except ValueError:
        raise SettingError(
            f"{spec.env}={text!r} ({cls.group}.{name}): expected {allowed}"
        ) from None
    return text


def settings_from_env(
    cls: type[SettingsGroup], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The fields of `cls` that the environment sets (empty variables count as unset)."""
    environ = os.environ if environ is None else environ
    values = {}
    for item in fields(cls):
        text = environ.get(spec_of(item).env, "")
        if text != "":
            values[item.name] = parse_setting(cls, item.name, text)
    return values


# --- the groups ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths(SettingsGroup):
    """Where processed tables and artifacts go. Steps write into ARTIFACTS_DIR/staging; the
    publishing step copies a checked, whole set into ARTIFACTS_DIR."""

    group: ClassVar[str] = "paths"
    data_dir: str = setting("data", "DATA_DIR", "processed tables (Parquet)")
    artifacts_dir: str = setting(
        "artifacts",
        "ARTIFACTS_DIR",
        "the published serving sets (`sets/`, `current` and links to its files); `staging/` below",
    )
    keep_sets: int = setting(
        3,
        "GAMEREC_KEEP_SETS",
        "published sets kept for `gamerec rollback` (the current one included)",
        gt=0,
        versioned=False,
    )

    def version_fields(self) -> dict[str, Any]:
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
    def test_interactions(self) -> Path:
        """The pairs of GAMEREC_TEST_PATH, indexed like the source (when it is set)."""
        return Path(self.data_dir) / "test_interactions.parquet"

    @property
    def published(self) -> Path:
        """The serving sets; readers resolve `current` in it (`manifest.resolve_set`)."""
        return Path(self.artifacts_dir)

    @property
    def source_snapshots(self) -> Path:
        """Copies of the input file as fingerprinted, which `interactions` parses."""
        return Path(self.data_dir) / "source"

    @property
    def staging(self) -> Path:
        """Each step's latest output, published only as a checked, whole set."""
        return Path(self.artifacts_dir) / "staging"

    @property
    def training_state(self) -> Path:
        """Per-epoch training state of an unfinished run; removed once the checkpoint is in."""
        return self.staging / "training_state"

    @property
    def tuned_settings(self) -> Path:
        """What the automatic search chose, with every trial (JSON)."""
        return self.staging / "tuned_settings.json"

    @property
    def tuning_study(self) -> Path:
        """The Optuna study's journal: a killed search resumes from its trials."""
        return self.staging / "tuning_study.journal"

    @property
    def training_job(self) -> Path:
        """The job description a torchrun job reads (TRAIN_NPROC > 1)."""
        return self.staging / "training_job.json"

    catalog = property(lambda self: self.staging / CATALOG_FILE)
    user_games = property(lambda self: self.staging / USER_GAMES_FILE)
    checkpoint = property(lambda self: self.staging / CHECKPOINT_FILE)
    item_embeddings = property(lambda self: self.staging / ITEM_EMBEDDINGS_FILE)
    user_tower = property(lambda self: self.staging / USER_TOWER_FILE)
    metrics = property(lambda self: self.staging / METRICS_FILE)
    faiss_index = property(lambda self: self.staging / INDEX_FILE)
    faiss_index_settings = property(lambda self: self.staging / INDEX_SETTINGS_FILE)


SOURCE_KINDS = ("synthetic", "steam200k", "interactions")
UNIX_TIME_UNITS = {"unix_s": 1, "unix_ms": 1_000, "unix_us": 1_000_000, "unix_ns": 1_000_000_000}
"""Timestamp formats for numbers: seconds (or ms, us, ns) since 1970-01-01 UTC, per second."""
SYNTHETIC_FIELDS = (
    "synthetic_users",
    "synthetic_games",
    "synthetic_interactions",
    "synthetic_seed",
)


@dataclass(frozen=True)
class Source(SettingsGroup):
    """The raw interactions: embedded synthetic data, a Steam-200k CSV, or a generic table."""

    group: ClassVar[str] = "source"
    kind: str = setting(
        "synthetic",
        "GAMEREC_SOURCE",
        "`synthetic` (embedded generator), `steam200k` (the public CSV) or `interactions` "
        "(your Parquet/CSV)",
        choices=SOURCE_KINDS,
    )
    path: str | None = setting(
        None, "GAMEREC_SOURCE_PATH", "the input file for `steam200k` and `interactions`"
    )
    test_path: str | None = setting(
        None,
        "GAMEREC_TEST_PATH",
        "for GAMEREC_SPLIT=predefined: a second file, same format, of held-out pairs (e.g. a "
        "benchmark's official test set); its players and games must be in the source",
    )
    synthetic_users: int = setting(10_000, "GAMEREC_SYNTHETIC_USERS", "synthetic players", gt=0)
    synthetic_games: int = setting(2_000, "GAMEREC_SYNTHETIC_GAMES", "synthetic games", gt=0)
    synthetic_interactions: int = setting(
        150_000, "GAMEREC_SYNTHETIC_INTERACTIONS", "synthetic interactions (about)", gt=0
    )
    synthetic_seed: int = setting(0, "SEED", "every random choice", ge=0)
    timestamp_format: str | None = setting(
        None,
        "GAMEREC_TIMESTAMP_FORMAT",
        "how `timestamp` is read: a strptime format such as `%m/%d/%Y` for text, `unix_s`, "
        "`unix_ms`, `unix_us` or `unix_ns` for numbers",
        default_shown="— (ISO 8601 text; numbers `unix_s`)",
    )
    input_check_seconds: int = setting(
        60,
        "GAMEREC_INPUT_CHECK_SECONDS",
        "how often the sensor `gamerec_input_changed` fingerprints the input, once switched on",
        gt=0,
        versioned=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind != "synthetic" and not self.path:
            raise SettingError(
                f"GAMEREC_SOURCE={self.kind!r} needs a file: set GAMEREC_SOURCE_PATH "
                "(source.path) to it"
            )
        layout = self.timestamp_format
        if layout and layout not in UNIX_TIME_UNITS and "%" not in layout:
            raise SettingError(
                f"GAMEREC_TIMESTAMP_FORMAT={layout!r} (source.timestamp_format): expected a "
                f"strptime format such as %m/%d/%Y or one of {', '.join(UNIX_TIME_UNITS)}"
            )

    def version_fields(self) -> dict[str, Any]:
        """What changes the data read (the file's bytes are hashed apart)."""
        if self.kind == "synthetic":
            names = SYNTHETIC_FIELDS
            return {"source.kind": self.kind, **{f"source.{n}": getattr(self, n) for n in names}}
        fields_ = {
            "source.kind": self.kind,
            "source.path": str(Path(self.path or "").resolve()),
            "source.timestamp_format": self.timestamp_format,
        }
        if self.test_path:
            fields_["source.test_path"] = str(Path(self.test_path).resolve())
        return fields_


LEAVE_ONE_OUT = ("max_playtime", "latest", "random")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?")
SPLIT_STRATEGIES = (*LEAVE_ONE_OUT, "temporal", "predefined")


def cutoff_moment(text: str) -> datetime.datetime | None:
    """An ISO date or datetime as a naive UTC datetime (how timestamps are stored: an offset
    is converted), or None when it is no real date (2019-13-45)."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class Split(SettingsGroup):
    """Which (user, game) pairs are held out for evaluation."""

    group: ClassVar[str] = "split"
    strategy: str = setting(
        "max_playtime",
        "GAMEREC_SPLIT",
        "what is held out: one game per player, the most played, the `latest` (needs "
        "`timestamp`) or a seeded `random` one; `temporal`: everything after a cut-off in "
        "time; `predefined`: the pairs of GAMEREC_TEST_PATH",
        choices=SPLIT_STRATEGIES,
    )
    cutoff: str = setting(
        "0.2",
        "GAMEREC_SPLIT_CUTOFF",
        "for `temporal`: an ISO date or datetime (later interactions are held out), or a "
        "fraction in (0, 1): the latest share of interactions",
    )
    seed: int = setting(0, "SEED", "every random choice", ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cutoff_value()

    def cutoff_value(self) -> float | str:
        """The cut-off as a fraction, or as the date text; a `SettingError` when neither."""
        try:
            fraction = float(self.cutoff)
        except ValueError:
            if not ISO_DATE.fullmatch(self.cutoff) or cutoff_moment(self.cutoff) is None:
                raise SettingError(
                    f"GAMEREC_SPLIT_CUTOFF={self.cutoff!r} (split.cutoff): expected an ISO date "
                    "such as 2025-06-01 or a fraction between 0 and 1"
                ) from None
            return self.cutoff
        if not 0 < fraction < 1:
            raise SettingError(
                f"GAMEREC_SPLIT_CUTOFF={self.cutoff!r} (split.cutoff): expected a fraction "
                "between 0 and 1 (exclusive) or an ISO date"
            )
        return fraction

    def version_fields(self) -> dict[str, Any]:
        fields_: dict[str, Any] = {"split.strategy": self.strategy}
        if self.strategy == "random":
            fields_["split.seed"] = self.seed
        if self.strategy == "temporal":
            fields_["split.cutoff"] = self.cutoff
        return fields_


USER_TOWERS = ("id", "history", "history+id")


@dataclass(frozen=True)
class TrainConfig(SettingsGroup):
    """Two-tower hyperparameters. The defaults were chosen on a tuning split of Steam-200k's
    training data (benchmarks/tuning_split.py); `SEED_MODEL` is the seed's plain model."""

    group: ClassVar[str] = "training"
    epochs: int = setting(20, "TRAIN_EPOCHS", "most epochs (the tuning split picks fewer)", gt=0)
    batch_size: int = setting(
        1024,
        "BATCH_SIZE",
        "pairs per batch, and in-batch negatives",
        ge=2,
        reason="a batch of one pair has no in-batch negative: its softmax is 1 whatever the "
        "model, the loss 0 and nothing is learned",
    )
    embed_dim: int = setting(256, "EMBED_DIM", "embedding size", gt=0)
    lr: float = setting(3e-3, "LR", "Adam learning rate", gt=0)
    seed: int = setting(0, "SEED", "every random choice", ge=0)
    user_tower: str = setting(
        "history",
        "GAMEREC_USER_TOWER",
        "`history` (mean of the player's games; folds in new players), `id` (the seed's), "
        "`history+id`",
        choices=USER_TOWERS,
    )
    normalize: bool = setting(True, "GAMEREC_NORMALIZE", "cosine scores")
    temperature: float = setting(0.15, "GAMEREC_TEMPERATURE", "scores are divided by it", gt=0)
    logq_correction: bool = setting(
        True, "GAMEREC_LOGQ_CORRECTION", "subtract log(sampling probability) of in-batch games"
    )
    mask_accidental_hits: bool = setting(
        True, "GAMEREC_MASK_ACCIDENTAL_HITS", "a game twice in a batch is not its own negative"
    )
    weight_decay: float = setting(
        0.0,
        "GAMEREC_WEIGHT_DECAY",
        "decoupled (AdamW) weight decay; with sparse gradients only on the table rows a batch "
        "touches, so frequent games are regularised more often (the history MLP's layers "
        "decay every step)",
        ge=0,
    )
    negatives: int = setting(
        0,
        "GAMEREC_NEGATIVES",
        "extra negatives per batch, drawn uniformly from the catalog and shared by its "
        "players, beside the in-batch ones (the logQ correction covers both kinds)",
        ge=0,
    )
    history_dropout: float = setting(
        0.0,
        "GAMEREC_HISTORY_DROPOUT",
        "share of the games in a training bag dropped at random (one is always kept)",
        ge=0,
    )
    playtime_weighting: bool = setting(
        True, "GAMEREC_PLAYTIME_WEIGHTING", "positives weigh 1 + log(1 + hours)"
    )
    history_weighting: bool = setting(
        False, "GAMEREC_HISTORY_WEIGHTING", "the history mean weighs games the same way"
    )
    history_sample: int = setting(
        50,
        "GAMEREC_HISTORY_SAMPLE",
        "most games of a player's history one training pair pools (a seeded sample, its own "
        "game left out), so a step's cost does not grow with history lengths; 0: all. "
        "Serving and evaluation pool the whole history",
        ge=0,
    )
    history_mlp: int = setting(
        0,
        "GAMEREC_HISTORY_MLP",
        "hidden width of a residual two-layer MLP on the pooled history, so a player's games "
        "can interact (history towers); 0: the mean alone",
        ge=0,
    )
    select_epochs: bool = setting(
        True, "GAMEREC_SELECT_EPOCHS", "choose the epoch count on a tuning split carved from train"
    )
    patience: int = setting(
        3, "GAMEREC_PATIENCE", "epochs without improvement before stopping", gt=0
    )
    refit: bool = setting(
        True, "GAMEREC_REFIT", "after selection, retrain on all of train for the best epochs"
    )
    sparse_gradients: bool = setting(
        True,
        "GAMEREC_SPARSE_GRADIENTS",
        "AdamW on the rows a batch touches; false = fused AdamW over whole tables",
    )
    epoch_checkpoints: bool = setting(
        True,
        "GAMEREC_EPOCH_CHECKPOINTS",
        "save the training state after every epoch so a killed run resumes",
        versioned=False,
    )
    nproc: int = setting(
        1,
        "TRAIN_NPROC",
        "1 trains in the run's process; N > 1 a torchrun job of N data-parallel processes",
        gt=0,
        versioned=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.history_dropout >= 1:
            raise SettingError(
                f"GAMEREC_HISTORY_DROPOUT={self.history_dropout!r} (training.history_dropout): "
                "expected a share in [0, 1)"
            )


SEED_MODEL = TrainConfig(
    epochs=5,
    embed_dim=64,
    lr=1e-3,
    user_tower="id",
    normalize=False,
    history_mlp=0,
    temperature=1.0,
    logq_correction=False,
    mask_accidental_hits=False,
    playtime_weighting=False,
    select_epochs=False,
    refit=False,
    sparse_gradients=False,
)
"""The seed's plain model: user-ID tower, raw dot product, plain in-batch softmax, 5 epochs."""


SEARCH_SPACE: dict[str, tuple[str, tuple[Any, ...]]] = {
    "lr": ("log", (5e-4, 2e-2)),
    "temperature": ("log", (0.03, 0.5)),
    "embed_dim": ("choice", (64, 128, 256, 512)),
    "weight_decay": ("choice", (0.0, 0.01, 0.1, 1.0)),
    "negatives": ("choice", (0, 256, 1024, 4096)),
    "history_dropout": ("uniform", (0.0, 0.5)),
    "history_sample": ("choice", (20, 50, 100)),
    "history_mlp": ("choice", (0, 512)),
    "playtime_weighting": ("choice", (True, False)),
}
"""Each training setting the automatic search may vary, and its range: `log` and `uniform`
floats between two bounds, or one of a few `choice`s."""


@dataclass(frozen=True)
class Tuning(SettingsGroup):
    """How choices are made on the tuning split (carved from train, never the hold-out)."""

    group: ClassVar[str] = "tuning"
    k: int = setting(
        20,
        "GAMEREC_TUNE_K",
        "cut-off of the tuning NDCG that picks epochs and baseline weights",
        gt=0,
    )
    sample_users: int = setting(
        20_000,
        "GAMEREC_TUNE_USERS",
        "users the tuning split holds a game out for (a seeded sample; its standard error is "
        "logged); 0: all",
        ge=0,
    )
    every_pairs: int = setting(
        4_000_000,
        "GAMEREC_TUNE_EVERY",
        "score the tuning split (and save the training state) after every epoch, or, when an "
        "epoch is longer than this many training pairs, after each of its fewest equal parts "
        "no longer; 0: once an epoch",
        ge=0,
    )
    trials: int = setting(
        12,
        "GAMEREC_TUNE_TRIALS",
        "most trials of the automatic search of training settings on the tuning split (the "
        "first is the declared defaults); 0: no search",
        ge=0,
    )
    budget: float = setting(
        1.5,
        "GAMEREC_TUNE_BUDGET",
        "time the search spends after the defaults' trial, as a multiple of that trial's time "
        "(so it scales with the data); a trial starts only while the time left is as long as "
        "the defaults' trial, and one running when it is spent stops at its next score; 1.5: "
        "one more full trial, and more when later trials are quicker than the defaults'; "
        "below 1: the defaults' trial alone",
        ge=0,
    )
    minutes: float = setting(
        20.0,
        "GAMEREC_TUNE_MINUTES",
        "the most minutes the whole search may take, whatever GAMEREC_TUNE_BUDGET allows; "
        "0: no limit",
        ge=0,
    )
    params: str = setting(
        ",".join(SEARCH_SPACE),
        "GAMEREC_TUNE_PARAMS",
        "training settings the search varies, comma-separated; a setting given explicitly "
        "(variable or run config) is fixed instead",
        default_shown="all of " + ", ".join(f"`{name}`" for name in SEARCH_SPACE),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [name for name in self.param_list() if name not in SEARCH_SPACE]
        if unknown:
            raise SettingError(
                f"GAMEREC_TUNE_PARAMS={self.params!r} (tuning.params): {', '.join(unknown)} "
                f"cannot be searched; expected names among {', '.join(SEARCH_SPACE)}"
            )

    def param_list(self) -> list[str]:
        return [name.strip() for name in self.params.split(",") if name.strip()]

    def searched(self, fixed: typing.Iterable[str] = ()) -> list[str]:
        """The settings the search varies: those listed, but for the `fixed` ones."""
        fixed = set(fixed)
        return [name for name in self.param_list() if name not in fixed]


@dataclass(frozen=True)
class Evaluation(SettingsGroup):
    """The headline cut-off and the baselines scored beside the model."""

    group: ClassVar[str] = "evaluation"
    k: int = setting(20, "VAL_K", "headline cut-off (10 and 50 are always reported too)", gt=0)
    ease_baseline: bool = setting(
        True, "GAMEREC_EASE_BASELINE", "also score EASE (skipped above 30,000 games)"
    )
    ease_l2: float = setting(
        0.0, "GAMEREC_EASE_L2", "EASE's L2 weight", ge=0, default_shown="0 (tuned)"
    )
    als_baseline: bool = setting(
        True, "GAMEREC_ALS_BASELINE", "also score implicit ALS (factors and weight tuned)"
    )
    sample_users: int = setting(
        0,
        "GAMEREC_EVAL_USERS",
        "evaluate a seeded sample of this many users (model and baselines alike)",
        ge=0,
        default_shown="0 (all)",
    )
    seed: int = setting(0, "SEED", "every random choice", ge=0)

    def version_fields(self) -> dict[str, Any]:
        fields_: dict[str, Any] = {
            "evaluation.k": self.k,
            "evaluation.ease_baseline": self.ease_baseline,
            "evaluation.als_baseline": self.als_baseline,
        }
        if self.ease_baseline:
            fields_["evaluation.ease_l2"] = self.ease_l2
        if self.sample_users:
            fields_["evaluation.sample_users"] = self.sample_users
            fields_["evaluation.seed"] = self.seed
        return fields_


INDEX_KINDS = ("flat", "hnsw", "ivf")
INDEX_METRICS = ("ip", "cosine")


@dataclass(frozen=True)
class IndexSettings(SettingsGroup):
    """FAISS index settings; changing them rebuilds only `faiss_index`."""

    group: ClassVar[str] = "index"
    kind: str = setting(
        "flat", "GAMEREC_INDEX", "`flat` (exact), `hnsw`, `ivf`", choices=INDEX_KINDS
    )
    metric: str = setting(
        "ip",
        "GAMEREC_INDEX_METRIC",
        "`ip` (the model's score) or `cosine` (vectors L2-normalised)",
        choices=INDEX_METRICS,
    )
    hnsw_m: int = setting(32, "GAMEREC_HNSW_M", "HNSW graph degree", gt=1)
    hnsw_ef_construction: int = setting(
        200, "GAMEREC_HNSW_EF_CONSTRUCTION", "HNSW build-time beam width", gt=0
    )
    hnsw_ef_search: int = setting(128, "GAMEREC_HNSW_EF_SEARCH", "HNSW query-time beam width", gt=0)
    ivf_nlist: int = setting(
        0,
        "GAMEREC_IVF_NLIST",
        "IVF lists",
        ge=0,
        default_shown="0 (≈ 4·√n, ≥ 39 games per list)",
    )
    ivf_nprobe: int = setting(32, "GAMEREC_IVF_NPROBE", "IVF lists searched per query", gt=0)

    def relevant_fields(self) -> dict[str, Any]:
        """The settings that matter for this kind (a new efSearch does not touch a flat index)."""
        prefix = {"flat": None, "hnsw": "hnsw_", "ivf": "ivf_"}[self.kind]
        return {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.name in ("kind", "metric") or (prefix and item.name.startswith(prefix))
        }

    def version_fields(self) -> dict[str, Any]:
        return {f"index.{name}": value for name, value in self.relevant_fields().items()}


DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Compute(SettingsGroup):
    """Where the math runs; none of it changes a result on CPU."""

    group: ClassVar[str] = "compute"
    device: str = setting(
        "auto",
        "GAMEREC_DEVICE",
        "`auto` (CUDA when available), `cpu`, `cuda`",
        choices=DEVICES,
        versioned=False,
    )
    num_threads: int = setting(
        0,
        "GAMEREC_NUM_THREADS",
        "torch and FAISS threads, set together",
        ge=0,
        versioned=False,
        default_shown="0 (all cores)",
    )


GROUPS: tuple[type[SettingsGroup], ...] = (
    Paths,
    Source,
    Split,
    TrainConfig,
    Tuning,
    Evaluation,
    IndexSettings,
    Compute,
)


def check_together(groups: dict[str, SettingsGroup]) -> None:
    """What one group cannot check alone: settings that only make sense together."""
    if groups["split"].strategy == "predefined" and not groups["source"].test_path:
        raise SettingError(
            "GAMEREC_SPLIT='predefined' (split.strategy) needs the held-out pairs: set "
            "GAMEREC_TEST_PATH (source.test_path) to the test file"
        )


def env_variable_names() -> dict[str, str]:
    """'training.lr' -> 'LR': how each setting is named where users set it."""
    return {f"{cls.group}.{item.name}": spec_of(item).env for cls in GROUPS for item in fields(cls)}


def env_variables() -> list[str]:
    """Every variable the project reads, in declaration order."""
    return list(dict.fromkeys(env_variable_names().values()))


def _shown_default(item: Field) -> str:
    spec = spec_of(item)
    if spec.default_shown is not None:
        return spec.default_shown
    value = item.default if item.default is not MISSING else None
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    return (
        f"`{value}`"
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def settings_table() -> str:
    """The README's configuration table: one row per variable, from the declarations."""
    rows: dict[str, list[str]] = {}
    for cls in GROUPS:
        for item in fields(cls):
            spec = spec_of(item)
            place = f"`{cls.group}.{item.name}`"
            if spec.env in rows:  # SEED: one variable, several fields
                rows[spec.env][1] += f", {place}"
                continue
            note = "" if spec.versioned else " (changes how, not what: no asset goes stale)"
            rows[spec.env] = [f"`{spec.env}`", place, _shown_default(item), spec.doc + note]
    lines = ["| variable | resource.field | default | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows.values()]
    return "\n".join(lines)


def group_from_values(cls: type[SettingsGroup], values: Mapping[str, Any]) -> SettingsGroup:
    """Build a group from field values, ignoring unknown keys (e.g. an older checkpoint's)."""
    names = {item.name for item in fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})
