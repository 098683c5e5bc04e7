"""Serving from artifacts: the numpy user tower, the Recommender and the `gamerec` commands."""

import json
import os
import subprocess
import sys
import unicodedata

import numpy as np
import polars as pl
import pytest
import torch

from gamerec_assets import Recommender, cli
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.recommend import (
    AmbiguousTitleError,
    UnknownGameError,
    UnknownUserError,
)
from gamerec_assets.core.training.checkpoint import load_checkpoint
from gamerec_assets.core.training.loss import playtime_weights
from gamerec_assets.core.user_tower import UserTower, save_user_tower

# --- the user tower as numpy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_tower, normalize, weighting, history_mlp",
    [
        ("history", True, False, 0),
        ("history", False, True, 0),
        ("id", False, False, 0),
        ("history+id", True, True, 0),
        ("history", True, False, 7),
        ("history", False, True, 7),
        ("history+id", True, True, 7),
    ],
)
def test_numpy_user_tower_equals_the_models_user_vectors(
    tmp_path, user_tower, normalize, weighting, history_mlp
):
    torch.manual_seed(0)
    model = TwoTower(6, 9, 5, user_tower, normalize, history_mlp)
    if history_mlp:  # as trained: the zero-initialised output layer no longer zero
        torch.nn.init.normal_(model.history_layers[2].weight)
        torch.nn.init.normal_(model.history_layers[2].bias)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(5), 3)  # user 5 owns nothing
    items = np.concatenate([rng.choice(9, 3, replace=False) for _ in range(5)])
    hours = rng.uniform(0, 50, len(users))
    weights = playtime_weights(hours) if weighting else None
    expected = model.user_vectors(UserHistory.from_pairs(users, items, 6, weights)).numpy()

    save_user_tower(tmp_path / "tower.npz", model, weighting)
    tower = UserTower.load(tmp_path / "tower.npz")
    for user in range(6):
        mine = users == user
        got = tower.vector(items[mine], hours[mine], user)
        np.testing.assert_allclose(got, expected[user], rtol=1e-5, atol=1e-6)


# --- the Recommender on a materialized graph -----------------------------------------------------


@pytest.fixture
def artifacts(published_run):
    return published_run.artifacts


def _brute_force(vector, item_vectors, exclude, k):
    scores = item_vectors @ vector
    scores[list(exclude)] = -np.inf
    return np.argsort(-scores, kind="stable")[:k].tolist()


def test_for_user_is_the_exact_top_k_without_owned_games(artifacts):
    recommender = Recommender.load(artifacts)
    games = pl.read_parquet(artifacts / "user_games.parquet")
    user_id = games["user_id"][0]
    owned = set(games.filter(pl.col("user_id") == user_id)["item_idx"].to_list())
    found = recommender.for_user(user_id, k=10)
    assert len(found) == 10
    assert not owned & {r.item_idx for r in found}
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    # the default flat index is exact: same games as brute force over item_emb.npy
    mine = games.filter(pl.col("user_id") == user_id)
    vector = recommender.tower.vector(
        mine["item_idx"].to_numpy(), mine["play_time_hours"].to_numpy(), int(mine["user_idx"][0])
    )
    item_vectors = np.load(artifacts / "item_emb.npy")
    assert [r.item_idx for r in found] == _brute_force(vector, item_vectors, owned, 10)
    catalog = pl.read_parquet(artifacts / "catalog.parquet")
    assert found[0].title == catalog["title"][found[0].item_idx]
    # the id given as text (as on the command line) finds the same user
    assert recommender.for_user(str(user_id), k=10) == found


def test_new_player_fold_in_matches_the_model(artifacts):
    recommender = Recommender.load(artifacts)
    catalog = pl.read_parquet(artifacts / "catalog.parquet")
    titles = catalog["title"][[3, 7, 11]].to_list()
    found = recommender.for_new_player(titles, k=5)
    assert {3, 7, 11}.isdisjoint(r.item_idx for r in found)
    model, _ = load_checkpoint(artifacts / "two_tower.pt")
    vector = model.fold_in(UserHistory.from_item_lists([[3, 7, 11]]))[0].numpy()
    expected = _brute_force(vector, model.item_vectors().numpy(), {3, 7, 11}, 5)
    assert [r.item_idx for r in found] == expected


def test_similar_games_exclude_the_game_itself(artifacts):
    recommender = Recommender.load(artifacts)
    title = recommender.catalog["title"][0]
    found = recommender.similar(title, k=4)
    assert len(found) == 4 and 0 not in {r.item_idx for r in found}
    item_vectors = np.load(artifacts / "item_emb.npy")
    assert [r.item_idx for r in found] == _brute_force(item_vectors[0], item_vectors, {0}, 4)


def test_unknown_users_and_titles_get_clear_errors(artifacts):
    recommender = Recommender.load(artifacts)
    with pytest.raises(UnknownUserError, match="unknown user '42': not in the training data"):
        recommender.for_user(42)
    with pytest.raises(UnknownUserError, match="user ids are integers"):
        recommender.for_user("alice")
    title = recommender.catalog["title"][5]
    with pytest.raises(UnknownGameError, match=f"closest: '{title}'"):
        recommender.similar(title.lower() + "x")
    with pytest.raises(ValueError, match="k must be at least 1"):
        recommender.similar(title, k=0)


def _with_titles(recommender: Recommender, titles: dict[int, str]) -> Recommender:
    """The same recommender over a catalog whose titles at some rows are replaced."""
    catalog = recommender.catalog.with_columns(
        title=pl.Series([titles.get(i, t) for i, t in enumerate(recommender.catalog["title"])])
    )
    return Recommender(
        catalog,
        recommender.index,
        recommender.metric,
        recommender.tower,
        recommender.user_games,
        recommender.item_vectors,
    )


def test_a_title_two_games_share_is_refused_with_their_ids_and_ids_choose_one(artifacts):
    recommender = _with_titles(Recommender.load(artifacts), {3: "Portal", 7: "Portal"})
    ids = recommender.catalog["game_id"]
    with pytest.raises(AmbiguousTitleError) as caught:
        recommender.similar("Portal")
    assert str(caught.value) == (
        f"2 games are titled 'Portal' (game ids {ids[3]}, {ids[7]}); name one by its id "
        "(--game-id / --game-ids, or game_id= in Python)"
    )
    with pytest.raises(AmbiguousTitleError):
        recommender.for_new_player(["Portal"])
    by_id = recommender.similar(game_id=ids[7], k=4)
    assert 7 not in {r.item_idx for r in by_id} and len(by_id) == 4
    assert recommender.similar(game_id=str(ids[7]), k=4) == by_id  # as typed on a command line
    mixed = recommender.for_new_player([recommender.catalog["title"][5]], k=3, game_ids=[ids[3]])
    assert mixed == recommender.for_new_player(game_ids=[ids[5], ids[3]], k=3)
    assert {3, 5}.isdisjoint(r.item_idx for r in mixed)
    with pytest.raises(UnknownGameError, match="unknown game id '999999': not in the catalog"):
        recommender.similar(game_id=999999)


def test_titles_are_compared_after_unicode_normalisation(artifacts):
    composed = unicodedata.normalize("NFC", "Pokémon Café")
    recommender = _with_titles(Recommender.load(artifacts), {5: composed})
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert recommender.item_idx_of_titles([decomposed]).tolist() == [5]
    assert recommender.similar(decomposed, k=2) == recommender.similar(composed, k=2)


def test_load_names_missing_artifacts(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing catalog.parquet.*materialize the graph"):
        Recommender.load(tmp_path)


# --- the command line ----------------------------------------------------------------------------


def test_recommend_and_similar_commands(artifacts, capsys):
    games = pl.read_parquet(artifacts / "user_games.parquet")
    user_id = str(games["user_id"][0])
    assert cli.main(["recommend", "--user", user_id, "-k", "3", "--artifacts", str(artifacts)]) == 0
    out = capsys.readouterr().out
    assert f"Top 3 for user {user_id}" in out and out.count("\n") == 4

    expected = Recommender.load(artifacts).for_user(user_id, 3)
    assert (
        cli.main(
            ["recommend", "--user", user_id, "-k", "3", "--json", "--artifacts", str(artifacts)]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [row["item_idx"] for row in rows] == [r.item_idx for r in expected]
    assert set(rows[0]) == {"item_idx", "game_id", "title", "score"}

    titles = Recommender.load(artifacts).catalog["title"][[1, 2]].to_list()
    assert cli.main(["recommend", "--games", *titles, "--artifacts", str(artifacts)]) == 0
    assert "new player who owns 2 game(s)" in capsys.readouterr().out
    assert (
        cli.main(
            ["similar", "--game", titles[0], "-k", "2", "--json", "--artifacts", str(artifacts)]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_commands_report_bad_ids_and_titles_with_exit_code_2(artifacts, capsys, monkeypatch):
    monkeypatch.setenv("ARTIFACTS_DIR", str(artifacts))
    assert cli.main(["recommend", "--user", "1"]) == 2
    assert "unknown user '1'" in capsys.readouterr().err
    assert cli.main(["similar", "--game", "No Such Game"]) == 2
    assert "unknown game 'No Such Game'" in capsys.readouterr().err
    monkeypatch.setenv("ARTIFACTS_DIR", str(artifacts.parent / "nowhere"))
    assert cli.main(["recommend", "--user", "1"]) == 2
    assert "materialize the graph first" in capsys.readouterr().err


def test_similar_and_recommend_by_game_id_on_the_command_line(artifacts, capsys):
    catalog = Recommender.load(artifacts).catalog
    first, second = (str(g) for g in catalog["game_id"][[1, 2]])
    folder = ["--artifacts", str(artifacts)]
    assert cli.main(["similar", "--game-id", first, "-k", "2", *folder]) == 0
    assert f"nearest to game id {first}" in capsys.readouterr().out
    assert cli.main(["recommend", "--game-ids", first, second, "-k", "2", "--json", *folder]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert cli.main(["recommend", "--user", "1", "--game-ids", first, *folder]) == 2
    assert "give --user ID, or the games a new player owns" in capsys.readouterr().err


def test_output_into_a_closed_pipe_exits_quietly(artifacts):
    """`gamerec recommend ... | head -1`: the reader leaves early; no BrokenPipeError."""
    games = pl.read_parquet(artifacts / "user_games.parquet")
    command = [
        sys.executable,
        "-m",
        "gamerec_assets.cli",
        "recommend",
        "--user",
        str(games["user_id"][0]),
        "-k",
        "50",
        "--artifacts",
        str(artifacts),
    ]
    reader_gone = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    reader_gone.stdout.close()  # like head -1 once it has its line, before gamerec writes
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 0
    assert stderr == ""


def test_failures_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    nowhere = str(tmp_path / "nowhere")
    assert cli.main(["recommend", "--user", "1", "--artifacts", nowhere]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"gamerec recommend: {nowhere}: no such folder; materialize the graph first (`gamerec "
        "materialize`), or point ARTIFACTS_DIR (or --artifacts) at its artifacts\n"
    )
    assert cli.main(["--debug", "recommend", "--user", "1", "--artifacts", nowhere]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(
        f"gamerec recommend: {nowhere}: no such folder; materialize the graph "
        "first (`gamerec materialize`), or point ARTIFACTS_DIR (or --artifacts) "
        "at its artifacts\n"
    )
    (tmp_path / "a-file").write_text("x")
    assert cli.main(["similar", "--game", "x", "--artifacts", str(tmp_path / "a-file")]) == 2
    assert "a-file: a file, not an artifacts folder" in capsys.readouterr().err
