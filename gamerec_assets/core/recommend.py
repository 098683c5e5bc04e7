"""Top-K games from the artifacts alone: for a known player, a new player, or a game.

Serving needs no Dagster run and no torch: the user tower is exported as plain arrays
(`user_tower.npz`, written with `item_emb.npy`), so loading is numpy, polars and FAISS only and
stays well under a second on Steam-200k-sized artifacts. A user's vector is computed the way
`TwoTower.encode_users` computes it, from every game the player owns (`user_games.parquet`,
written at ingestion); games the player owns are never recommended. `Recommender.load` serves
only a published set whose files match its manifest (see `publish`), all read from the set that
was current when it started.

Games are named by title (compared after Unicode NFC normalisation, so a title typed with a
combining accent matches the catalog's) or by game id; a title that several games share is
refused with their ids, so that one can be chosen by id.
"""

import difflib
import io
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from gamerec_assets.core.index import search
from gamerec_assets.core.manifest import (
    CATALOG_FILE,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
    ITEM_EMBEDDINGS_FILE,
    USER_GAMES_FILE,
    USER_TOWER_FILE,
    read_verified_files,
    resolve_set,
)
from gamerec_assets.core.user_tower import UserTower

CLOSE_MATCHES = 5


class UnknownGameError(KeyError):
    """A title or game id that is not in the catalog; the message lists the closest titles."""

    def __str__(self) -> str:
        return str(self.args[0])


class AmbiguousTitleError(UnknownGameError):
    """A title several games share; the message lists their game ids."""


class UnknownUserError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Recommendation:
    item_idx: int
    game_id: Any
    title: str
    score: float


class Recommender:
    """Recommendations from an artifacts folder (ARTIFACTS_DIR) of a materialized graph."""

    def __init__(
        self,
        catalog: pl.DataFrame,
        index: faiss.Index,
        metric: str,
        tower: UserTower,
        user_games: pl.DataFrame,
        item_vectors: np.ndarray,
    ) -> None:
        self.catalog, self.index, self.metric = catalog, index, metric
        self.tower, self.user_games, self.item_vectors = tower, user_games, item_vectors
        self._titles: dict[str, list[int]] = {}
        for item, title in enumerate(catalog["title"].to_list()):
            self._titles.setdefault(_normal(title), []).append(item)
        self._game_ids = {game_id: i for i, game_id in enumerate(catalog["game_id"].to_list())}

    @classmethod
    def load(cls, artifacts_dir: str | Path, verify: bool = True) -> "Recommender":
        """Load a published set; with `verify`, refuse files that do not match its manifest
        (`publish.ArtifactSetError`), e.g. an index copied in from another run."""
        folder = resolve_set(Path(artifacts_dir))
        needed = [
            CATALOG_FILE,
            ITEM_EMBEDDINGS_FILE,
            INDEX_FILE,
            INDEX_SETTINGS_FILE,
            USER_TOWER_FILE,
            USER_GAMES_FILE,
        ]
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: missing {', '.join(missing)}; materialize the graph first "
                "(`gamerec materialize`), or point ARTIFACTS_DIR at its artifacts"
            )
        if verify:
            files = read_verified_files(folder, needed)
        else:
            files = {name: (folder / name).read_bytes() for name in needed}
        settings = json.loads(files[INDEX_SETTINGS_FILE].decode("utf-8"))
        return cls(
            catalog=pl.read_parquet(io.BytesIO(files[CATALOG_FILE])),
            index=faiss.deserialize_index(np.frombuffer(files[INDEX_FILE], dtype=np.uint8)),
            metric=settings["metric"],
            tower=UserTower.load(io.BytesIO(files[USER_TOWER_FILE])),
            user_games=pl.read_parquet(io.BytesIO(files[USER_GAMES_FILE])),
            item_vectors=np.load(io.BytesIO(files[ITEM_EMBEDDINGS_FILE])),
        )

    def item_idx_of_titles(self, titles: Sequence[str]) -> np.ndarray:
        """Catalog rows of exact titles (NFC-normalised); an unknown one raises with the
        closest matches, one that several games share with their game ids."""
        rows = []
        for title in titles:
            found = self._titles.get(_normal(title))
            if found is None:
                close = difflib.get_close_matches(
                    _normal(title), self._titles, n=CLOSE_MATCHES, cutoff=0.5
                )
                hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
                raise UnknownGameError(f"unknown game {title!r}{hint}")
            if len(found) > 1:
                ids = ", ".join(str(self.catalog["game_id"][item]) for item in found)
                raise AmbiguousTitleError(
                    f"{len(found)} games are titled {title!r} (game ids {ids}); name one by "
                    "its id (--game-id / --game-ids, or game_id= in Python)"
                )
            rows.append(found[0])
        return np.asarray(rows, dtype=np.int64)

    def item_idx_of_game_ids(self, game_ids: Sequence[str | int]) -> np.ndarray:
        """Catalog rows of game ids, given as they are or as text (from the command line)."""
        integer_ids = self.catalog["game_id"].dtype.is_integer()
        rows = []
        for game_id in game_ids:
            try:
                key = int(game_id) if integer_ids else str(game_id)
            except ValueError:
                raise UnknownGameError(
                    f"unknown game id {str(game_id)!r}: game ids are integers"
                ) from None
            if key not in self._game_ids:
                raise UnknownGameError(
                    f"unknown game id {str(game_id)!r}: not in the catalog "
                    f"({len(self._game_ids)} games)"
                )
            rows.append(self._game_ids[key])
        return np.asarray(rows, dtype=np.int64)

    def _items(self, titles: Sequence[str], game_ids: Sequence[str | int]) -> np.ndarray:
        if not titles and not game_ids:
            raise ValueError("name at least one game, by title or by game id")
        items = np.concatenate(
            [self.item_idx_of_titles(titles), self.item_idx_of_game_ids(game_ids)]
        )
        return np.unique(items)  # a game named twice counts once

    def for_user(self, user_id: str | int, k: int = 10) -> list[Recommendation]:
        """Top-k for a known player from every game they own, none of which is returned."""
        games = self._games_of(user_id)
        user_idx = int(games["user_idx"][0])
        owned = games["item_idx"].to_numpy()
        vector = self.tower.vector(owned, games["play_time_hours"].to_numpy(), user_idx)
        return self._top(vector, k, exclude=owned)

    def for_new_player(
        self,
        titles: Sequence[str] = (),
        k: int = 10,
        *,
        game_ids: Sequence[str | int] = (),
    ) -> list[Recommendation]:
        """Top-k for a player unseen in training, from the games they own (fold-in), named
        by title, by game id, or both."""
        if self.tower.history_embedding is None:
            raise ValueError(
                "this model's user tower is 'id', which cannot score new players; "
                "train with GAMEREC_USER_TOWER=history or history+id"
            )
        owned = self._items(titles, game_ids)
        return self._top(self.tower.vector(owned, None, None), k, exclude=owned)

    def similar(
        self, title: str | None = None, k: int = 10, *, game_id: str | int | None = None
    ) -> list[Recommendation]:
        """The k games nearest to one game (by title or by game id) by item vector, through
        the FAISS index."""
        if (title is None) == (game_id is None):
            raise ValueError("name one game: a title or a game_id")
        item = self._items(
            [title] if title is not None else [], [game_id] if game_id is not None else []
        )
        vector = np.asarray(self.item_vectors[int(item[0])], dtype=np.float32)
        return self._top(vector, k, exclude=item)

    def _games_of(self, user_id: str | int) -> pl.DataFrame:
        column = self.user_games["user_id"]
        try:
            key = int(user_id) if column.dtype.is_integer() else str(user_id)
        except ValueError:
            raise UnknownUserError(
                f"unknown user {str(user_id)!r}: user ids are integers"
            ) from None
        games = self.user_games.filter(pl.col("user_id") == key)
        if games.height == 0:
            raise UnknownUserError(
                f"unknown user {str(user_id)!r}: not in the training data "
                f"({column.n_unique()} users); for a new player, pass the games they own"
            )
        return games

    def _top(self, vector: np.ndarray, k: int, exclude: np.ndarray) -> list[Recommendation]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        wanted = min(k + len(exclude), self.index.ntotal)
        scores, items = search(self.index, vector[None, :].astype(np.float32), wanted, self.metric)
        excluded = set(exclude.tolist())
        results = []
        for score, item in zip(scores[0], items[0], strict=True):
            if item < 0 or int(item) in excluded:
                continue
            row = self.catalog.row(int(item), named=True)
            results.append(Recommendation(int(item), row["game_id"], row["title"], float(score)))
            if len(results) == k:
                break
        return results


def sample_recommendations(
    recommender: Recommender, n_users: int = 3, k: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """For a seeded sample of players with at least 3 games: their most-played games and
    the top k recommended, by title (a table to eyeball in the UI)."""
    games = recommender.user_games
    players = games.group_by("user_id").len().filter(pl.col("len") >= 3).sort("user_id")
    if players.height == 0:
        return []
    chosen = players.sample(n=min(n_users, players.height), seed=seed)["user_id"].to_list()
    titles = recommender.catalog["title"]
    rows = []
    for user_id in chosen:
        mine = games.filter(pl.col("user_id") == user_id).sort("play_time_hours", descending=True)
        rows.append(
            {
                "user_id": user_id,
                "games": mine.height,
                "most played": ", ".join(titles.gather(mine["item_idx"].head(3)).to_list()),
                f"top {k} recommended": ", ".join(
                    r.title for r in recommender.for_user(user_id, k)
                ),
            }
        )
    return rows


def _normal(title: str | None) -> str:
    return unicodedata.normalize("NFC", title or "")


def as_dicts(recommendations: list[Recommendation]) -> list[dict[str, Any]]:
    return [asdict(r) for r in recommendations]
