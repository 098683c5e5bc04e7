"""`gamerec materialize`: rebuild exactly what is stale or missing, through the real instance."""

import json
import os
import re

import dagster as dg
import numpy as np
import polars as pl
import pytest

from gamerec_assets import cli
from gamerec_assets.core.index import IndexSettings, build_index, read_index, search
from gamerec_assets.core.settings import env_variables
from gamerec_tests.conftest import ALL_ASSETS, clustered_interactions, project_environment


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A clean environment: temporary DAGSTER_HOME and folders, quick training settings."""
    for variable in env_variables():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in {**project_environment(tmp_path), "LR": "0.01"}.items():
        monkeypatch.setenv(variable, value)
    return tmp_path


def gamerec(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().out


def plan_rows(output: str) -> dict[str, tuple[str, str, str]]:
    """asset -> (status, action, cause) from the printed plan table."""
    rows = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=3)
        if parts and parts[0] in ALL_ASSETS:
            rows[parts[0]] = (parts[1], parts[2], parts[3] if len(parts) > 3 else "")
    return rows


def materialization_counts() -> dict[str, int]:
    instance = dg.DagsterInstance.get()
    return {
        name: len(instance.fetch_materializations(dg.AssetKey(name), limit=1000).records)
        for name in ALL_ASSETS
    }


def test_a_second_run_with_nothing_changed_executes_no_asset(project, capsys):
    code, output = gamerec(capsys, "materialize")
    assert code == 0
    assert {status for status, _, _ in plan_rows(output).values()} == {"missing"}
    assert "Materializing 9 asset(s)" in output
    before = materialization_counts()
    assert set(before.values()) == {1}

    code, output = gamerec(capsys, "materialize")
    assert code == 0
    assert "Nothing to materialize" in output
    assert all(row == ("fresh", "-", "") for row in plan_rows(output).values())
    assert materialization_counts() == before


def test_a_new_learning_rate_rebuilds_the_checkpoint_and_everything_after_it(
    project, capsys, monkeypatch
):
    assert gamerec(capsys, "materialize")[0] == 0
    before = materialization_counts()
    monkeypatch.setenv("LR", "0.02")

    code, output = gamerec(capsys, "materialize", "--dry-run")
    assert code == 0
    rows = plan_rows(output)
    rebuilt = {
        "two_tower_checkpoint",
        "item_embeddings",
        "eval_metrics",
        "faiss_index",
        "serving_set",
    }
    for name in rebuilt:
        assert rows[name] == ("stale", "run", "LR changed (0.01 -> 0.02)")
    for name in set(ALL_ASSETS) - rebuilt:
        assert rows[name] == ("fresh", "-", "")
    assert materialization_counts() == before  # a dry run materializes nothing

    assert gamerec(capsys, "materialize")[0] == 0
    after = materialization_counts()
    assert {name for name in ALL_ASSETS if after[name] > before[name]} == rebuilt
    assert "Nothing to materialize" in gamerec(capsys, "materialize")[1]


def test_index_settings_rebuild_only_the_index_and_hnsw_matches_exact_search(
    project, capsys, monkeypatch
):
    for variable in (
        "GAMEREC_SYNTHETIC_USERS",
        "GAMEREC_SYNTHETIC_GAMES",
        "GAMEREC_SYNTHETIC_INTERACTIONS",
    ):
        monkeypatch.delenv(variable)  # the default synthetic size: 2,000 games
    monkeypatch.setenv("TRAIN_EPOCHS", "1")
    monkeypatch.setenv("EMBED_DIM", "32")
    monkeypatch.setenv("BATCH_SIZE", "1024")
    assert gamerec(capsys, "materialize")[0] == 0
    checkpoint = project / "artifacts" / "two_tower.pt"
    checkpoint_bytes = checkpoint.read_bytes()
    before = materialization_counts()

    monkeypatch.setenv("GAMEREC_INDEX", "hnsw")
    code, output = gamerec(capsys, "materialize")
    assert code == 0
    assert plan_rows(output)["faiss_index"][:2] == ("stale", "run")
    assert 'GAMEREC_INDEX changed ("flat" -> "hnsw")' in plan_rows(output)["faiss_index"][2]
    after = materialization_counts()
    rebuilt = {name for name in ALL_ASSETS if after[name] > before[name]}
    assert rebuilt == {"faiss_index", "serving_set"}
    assert checkpoint.read_bytes() == checkpoint_bytes

    vectors = np.load(project / "artifacts" / "item_emb.npy")
    hnsw = read_index(project / "artifacts" / "index.faiss")
    assert "HNSW" in type(hnsw).__name__
    _, truth = search(build_index(vectors, IndexSettings()), vectors, 20)
    _, found = search(hnsw, vectors, 20)
    agreement = np.mean([len(np.intersect1d(t, f)) / 20 for t, f in zip(truth, found)])
    assert len(vectors) == 2_000
    assert agreement >= 0.99


def test_a_new_cutoff_reevaluates_and_republishes_but_never_rebuilds_the_index(
    project, capsys, monkeypatch
):
    assert gamerec(capsys, "materialize")[0] == 0
    before = materialization_counts()
    monkeypatch.setenv("VAL_K", "10")
    code, output = gamerec(capsys, "materialize")
    assert code == 0
    assert plan_rows(output)["eval_metrics"] == ("stale", "run", "VAL_K changed (20 -> 10)")
    assert plan_rows(output)["faiss_index"] == ("fresh", "-", "")
    after = materialization_counts()
    assert {name for name in ALL_ASSETS if after[name] > before[name]} == {
        "eval_metrics",
        "serving_set",
    }
    published = json.loads((project / "artifacts" / "metrics.json").read_text())
    assert published["k"] == 10 and "recall@10" in published


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("EMBED_DIM", "0", "EMBED_DIM=0 (training.embed_dim): expected an integer > 0"),
        ("LR", "inf", "LR=inf (training.lr): expected a finite number > 0"),
        ("GAMEREC_SPLIT", "bogus", "expected one of max_playtime, latest, random"),
        ("BATCH_SIZE", "1.5", "BATCH_SIZE='1.5' (training.batch_size): expected an integer >= 2"),
        ("BATCH_SIZE", "1", "expected an integer >= 2 (a batch of one pair has no in-batch"),
        (
            "GAMEREC_KEEP_SETS",
            "0",
            "GAMEREC_KEEP_SETS=0 (paths.keep_sets): expected an integer > 0",
        ),
    ],
)
def test_a_bad_setting_is_one_line_before_anything_runs(
    project, capsys, monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    code = cli.main(["materialize"])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"gamerec materialize: {variable}=")
    assert expected in captured.err
    assert materialization_counts() == dict.fromkeys(ALL_ASSETS, 0)


def test_rematerializing_interactions_from_the_same_input_leaves_downstream_fresh(project, capsys):
    assert gamerec(capsys, "materialize")[0] == 0
    before = materialization_counts()
    code, output = gamerec(capsys, "materialize", "--select", "interactions", "--all")
    assert code == 0
    assert plan_rows(output)["interactions"] == ("fresh", "run", "forced (--all)")
    assert materialization_counts()["interactions"] == before["interactions"] + 1

    code, output = gamerec(capsys, "materialize", "--dry-run")
    assert all(row == ("fresh", "-", "") for row in plan_rows(output).values())
    assert "Nothing to materialize" in output


def test_a_changed_input_file_marks_interactions_stale_and_rebuilds_downstream(
    project, capsys, monkeypatch
):
    source = project / "interactions.csv"
    frame = clustered_interactions()
    frame.write_csv(source)
    monkeypatch.setenv("GAMEREC_SOURCE", "interactions")
    monkeypatch.setenv("GAMEREC_SOURCE_PATH", str(source))
    assert gamerec(capsys, "materialize")[0] == 0

    frame.with_columns(play_time_hours=pl.col("play_time_hours") * 2 + 1).write_csv(source)
    code, output = gamerec(capsys, "materialize", "--dry-run")
    plan = plan_rows(output)
    assert plan["interactions"][:2] == ("stale", "run")
    assert "raw_interactions" in plan["interactions"][2]
    assert all(plan[name][1] == "run" for name in ALL_ASSETS)


def test_select_narrows_the_plan(project, capsys, monkeypatch):
    assert gamerec(capsys, "materialize")[0] == 0
    monkeypatch.setenv("EMBED_DIM", "8")
    code, output = gamerec(capsys, "materialize", "--select", "group:training")
    assert code == 0
    rows = plan_rows(output)
    assert [name for name, row in rows.items() if row[1] == "run"] == [
        "two_tower_checkpoint",
        "item_embeddings",
    ]
    assert rows["faiss_index"][0] == "stale"  # still stale, but outside the selection


def test_bad_input_fails_the_command_naming_row_and_column(project, capsys, monkeypatch):
    bad = project / "bad.csv"
    bad.write_text("user_id,game_id,play_time_hours\n1,10,2.0\n1,11,nan\n2,10,1.0\n2,11,4.0\n")
    monkeypatch.setenv("GAMEREC_SOURCE", "interactions")
    monkeypatch.setenv("GAMEREC_SOURCE_PATH", str(bad))
    code, output = gamerec(capsys, "materialize")
    assert code == 1
    assert "FAILED" in output
    assert "data row 2 (line 3), column play_time_hours: expected a finite number >= 0" in output
    assert materialization_counts()["two_tower_checkpoint"] == 0


def test_without_dagster_home_it_uses_the_project_folder(project, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.chdir(project)
    code, output = gamerec(capsys, "materialize", "--dry-run")
    assert code == 0
    assert f"using {project / 'dagster_home'}" in output
    assert os.environ["DAGSTER_HOME"] == str(project / "dagster_home")


def test_a_dagster_home_that_is_a_file_is_one_line(project, capsys, monkeypatch):
    home = project / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["materialize", "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"gamerec materialize: DAGSTER_HOME={home}: a file, not a folder; point DAGSTER_HOME at "
        "the folder that keeps the run history (it is created when missing)\n"
    )


def test_selecting_half_of_the_split_runs_both_of_its_outputs(project, capsys):
    assert gamerec(capsys, "materialize")[0] == 0
    before = materialization_counts()
    code, output = gamerec(capsys, "materialize", "--select", "train_interactions", "--all")
    assert code == 0
    assert "Materializing 2 asset(s) in one run: train_interactions, val_interactions" in output
    after = materialization_counts()
    assert {name for name in ALL_ASSETS if after[name] > before[name]} == {
        "train_interactions",
        "val_interactions",
    }


def test_a_dotenv_file_in_the_working_directory_is_read_like_dagster_does(
    project, capsys, monkeypatch
):
    assert gamerec(capsys, "materialize")[0] == 0
    monkeypatch.chdir(project)
    (project / ".env").write_text("LR=0.02\n")
    code = cli.main(["materialize", "--dry-run"])
    captured = capsys.readouterr()
    output = captured.out
    assert code == 0
    assert "Loaded LR from .env" in captured.err  # stderr, so `--json` output stays parseable
    assert plan_rows(output)["two_tower_checkpoint"] == (
        "stale",
        "run",
        "LR changed (0.01 -> 0.02)",
    )


def test_a_file_replaced_between_fingerprint_and_read_is_never_published_under_the_wrong_one(
    project, capsys, monkeypatch
):
    """The issue's case: the input is fingerprinted, then replaced before `interactions`
    reads it. What is parsed is the copy of the bytes fingerprinted; after the original is
    restored, "nothing to materialize" is the truth, and serving answers from it."""
    from gamerec_assets import materialize as materialize_module

    source = project / "interactions.csv"
    original = clustered_interactions()
    original.write_csv(source)
    replacement = clustered_interactions(n_users=80).with_columns(game_id=pl.col("game_id") + 500)
    monkeypatch.setenv("GAMEREC_SOURCE", "interactions")
    monkeypatch.setenv("GAMEREC_SOURCE_PATH", str(source))
    real_plan = materialize_module.build_plan

    def replace_the_file_then_plan(*args, **kwargs):
        replacement.write_csv(source)  # after raw_interactions, before interactions
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(materialize_module, "build_plan", replace_the_file_then_plan)
    assert gamerec(capsys, "materialize")[0] == 0
    monkeypatch.setattr(materialize_module, "build_plan", real_plan)
    published = pl.read_parquet(project / "artifacts" / "catalog.parquet")
    assert sorted(published["game_id"].to_list()) == sorted(original["game_id"].unique())

    original.write_csv(source)  # restored: what serves is what was fingerprinted
    code, output = gamerec(capsys, "materialize")
    assert code == 0 and "Nothing to materialize" in output
    replacement.write_csv(source)  # replaced for good: it is noticed
    code, output = gamerec(capsys, "materialize", "--dry-run")
    assert plan_rows(output)["interactions"][:2] == ("stale", "run")


def test_a_failed_quality_gate_says_why_and_that_nothing_was_published(
    project, capsys, monkeypatch
):
    for variable, value in {
        "LR": "1e-7",
        "TRAIN_EPOCHS": "1",
        "GAMEREC_EASE_BASELINE": "0",
    }.items():
        monkeypatch.setenv(variable, value)  # a model that cannot beat popularity
    code = cli.main(["materialize"])
    captured = capsys.readouterr()
    assert code == 1
    assert re.search(
        r"check model_beats_popularity on eval_metrics failed \(blocking\): model recall@20 "
        r"0\.\d{4} is not above popularity 0\.\d{4}\n",
        captured.out,
    )
    artifacts = project / "artifacts"
    assert (
        f"nothing was published (a blocking check failed); nothing is published in {artifacts} "
        "yet" in captured.out
    )
    assert "Traceback" not in captured.err and "Stack Trace" not in captured.err

    code, output = gamerec(capsys, "materialize", "--all", "--select", "serving_set")
    assert code == 1
    assert (
        "  serving_set failed: not publishing: model_beats_popularity on eval_metrics failed "
        "(model recall@20 0." in output
    )
