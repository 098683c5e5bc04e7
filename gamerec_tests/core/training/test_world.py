"""One loop for one process and for N: a world of 1 changes nothing; a real 2-process gloo
job trains the model one process trains."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from gamerec_assets.core.evaluation import EvaluationData, evaluate_two_tower
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.settings import SEED_MODEL, TrainConfig
from gamerec_assets.core.splits import leave_one_out_split
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.core.training.checkpoint import checkpoint_fingerprint, load_checkpoint
from gamerec_assets.core.training.job import TrainingJob, run_training
from gamerec_assets.core.training.loop import PairTowers, TrainingPairs, train_model
from gamerec_assets.core.training.world import SINGLE_PROCESS, World
from gamerec_assets.train_worker import torchrun_command
from gamerec_tests.core.training.helpers import ALL_OPTIONS, clusters_with_hours, quiet


@pytest.mark.parametrize("n_rows, size", [(10, 2), (11, 2), (1, 2), (7, 3)])
def test_shards_are_contiguous_cover_the_batch_in_order_and_differ_by_at_most_one(n_rows, size):
    rows = torch.arange(n_rows) * 10
    shares = [World(rank, size).shard(rows) for rank in range(size)]
    assert torch.equal(torch.cat([share for share, _, _ in shares]), rows)
    sizes = shares[0][2]
    assert sizes == [len(share) for share, _, _ in shares] and max(sizes) - min(sizes) <= 1
    assert [offset for _, offset, _ in shares] == [sum(sizes[:rank]) for rank in range(size)]


def test_a_world_of_one_passes_everything_through():
    rows = torch.arange(5)
    assert SINGLE_PROCESS.shard(rows) == (rows, 0, [5])
    local = torch.randn(5, 3, requires_grad=True)
    assert SINGLE_PROCESS.gather_rows(local, [5]) is local
    assert SINGLE_PROCESS.gather_objects("x") == ["x"]
    assert SINGLE_PROCESS.mean(0.25) == 0.25 and SINGLE_PROCESS.from_main({"a": 1}) == {"a": 1}
    module = PairTowers(TwoTower(2, 3, 4))
    assert SINGLE_PROCESS.wrap(module, sparse_gradients=True) is module


def test_nccl_with_sparse_gradients_is_refused_before_anything_starts():
    module = PairTowers(TwoTower(5, 6, 4, "history").use_sparse_gradients(True))
    with pytest.raises(ValueError, match="GAMEREC_SPARSE_GRADIENTS=false"):
        World(0, 2, torch.device("cuda")).wrap(module, sparse_gradients=True)


@pytest.fixture(scope="module")
def gloo_world_of_one(tmp_path_factory):
    """A real gloo process group of one process, so the collectives run in this test."""
    store = tmp_path_factory.mktemp("store") / "rendezvous"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield World(0, 1)
    dist.destroy_process_group()


def test_training_in_a_process_group_of_one_equals_training_without_one(gloo_world_of_one):
    """The collectives of a world of 1 are identities: a job of one process trains the very
    model the in-process path trains, bit for bit."""
    users, items, hours = clusters_with_hours()
    pairs, config = TrainingPairs(users, items, hours), replace(ALL_OPTIONS, epochs=3)
    alone = train_model(pairs, 20, 10, config, log=quiet, progress=False)
    grouped = train_model(pairs, 20, 10, config, world=gloo_world_of_one, log=quiet, progress=False)
    assert alone.epoch_losses == grouped.epoch_losses
    for name, tensor in alone.model.state_dict().items():
        assert torch.equal(tensor, grouped.model.state_dict()[name]), name


# --- a real job: torchrun, 2 gloo processes -----------------------------------------------------

BATCH = 257  # odd: the two shares differ by one row
CONFIG = replace(
    TrainConfig(),
    epochs=4,
    batch_size=BATCH,
    embed_dim=16,
    lr=0.01,
    negatives=32,
    history_dropout=0.2,
    weight_decay=1e-3,
    history_mlp=32,
)
"""The project's default model (history tower and its MLP, sparse gradients, every
correction), small, with uniform negatives, history dropout and lazy weight decay on: the
MLP's dense gradients are all-reduced beside the tables' sparse ones."""


@pytest.fixture(scope="module")
def job_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    spec = SyntheticSpec(n_users=600, n_games=120, n_interactions=7_000)
    indexed = index_interactions(generate_synthetic_interactions(spec))
    split = leave_one_out_split(indexed.interactions, "max_playtime")
    # one pair past a whole number of batches: the last batch has one row, so one process
    # gets an empty share and must still take part in every collective
    train = split.train.head((split.train.height // BATCH) * BATCH + 1)
    path = folder / "train_interactions.parquet"
    train.write_parquet(path)
    n_users = int(indexed.interactions["user_idx"].max()) + 1
    return folder, path, train, split.val, n_users, indexed.catalog.height


def write_job(folder, name: str, **fields) -> TrainingJob:
    job = TrainingJob(num_threads=1, **fields)
    (folder / f"{name}.json").write_text(job.to_json())
    return job


def run_job(folder, name: str) -> subprocess.CompletedProcess:
    command = torchrun_command(2, folder / f"{name}.json")
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_two_gloo_processes_train_the_model_one_process_trains(job_data):
    """Same global batch: the same losses, tuning scores, metrics and (to float rounding)
    weights; a checkpoint of the same structure, written by the same code."""
    folder, path, train, val, n_users, n_items = job_data
    common = dict(train_path=str(path), n_users=n_users, n_items=n_items, config=CONFIG)
    single = run_training(
        TrainingJob(checkpoint_path=str(folder / "single.pt"), input_paths=(str(path),), **common),
        log=quiet,
    )
    write_job(
        folder, "ddp", checkpoint_path=str(folder / "ddp.pt"), input_paths=(str(path),), **common
    )
    job = run_job(folder, "ddp")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "rank 0 of 2 processes (gloo)" in job.stderr
    assert "refit epoch 1:" in job.stderr

    ddp_model, ddp = load_checkpoint(folder / "ddp.pt")
    _, one = load_checkpoint(folder / "single.pt")
    assert set(ddp) == set(one) and set(ddp["extra"]) == set(one["extra"])
    assert ddp["model_args"] == one["model_args"] and ddp["config"] == one["config"]
    assert ddp["extra"]["world_size"] == 2 and one["extra"]["world_size"] == 1
    assert ddp["extra"]["inputs"] == one["extra"]["inputs"]
    assert ddp["best_epoch"] == one["best_epoch"]
    np.testing.assert_allclose(ddp["epoch_losses"], one["epoch_losses"], rtol=1e-5)
    np.testing.assert_allclose(
        ddp["extra"]["tuning_epoch_losses"], one["extra"]["tuning_epoch_losses"], rtol=1e-5
    )
    np.testing.assert_allclose(ddp["tuning_ndcg"], one["tuning_ndcg"], atol=1e-4)
    for name, tensor in one["model_state"].items():
        assert ddp["model_state"][name].shape == tensor.shape
        torch.testing.assert_close(ddp["model_state"][name], tensor, rtol=0, atol=1e-4)

    data = EvaluationData(train=train, val=val, n_users=n_users, n_items=n_items)
    single_metrics = evaluate_two_tower(single.final.model, CONFIG, data, (20,))
    ddp_metrics = evaluate_two_tower(ddp_model, CONFIG, data, (20,))
    for name, value in single_metrics.items():
        assert ddp_metrics[name] == pytest.approx(value, abs=2e-3), name
    assert not list(folder.glob(".*.tmp"))  # rank 0 alone wrote, atomically


def test_a_rerun_of_a_finished_job_resumes_from_rank_0s_state(job_data):
    """Rank 0 reads the epoch state and hands it to the others: a rerun of the same job
    resumes on every process (none retrains) and writes the same model."""
    folder, path, _, _, n_users, n_items = job_data
    write_job(
        folder,
        "resumed",
        train_path=str(path),
        n_users=n_users,
        n_items=n_items,
        checkpoint_path=str(folder / "resumed.pt"),
        config=replace(SEED_MODEL, epochs=2, batch_size=BATCH, embed_dim=8, lr=0.01),
        state_dir=str(folder / "state"),
        input_paths=(str(path),),
    )
    first = run_job(folder, "resumed")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resuming" not in first.stderr and "train epoch 2:" in first.stderr
    fingerprint = checkpoint_fingerprint(folder / "resumed.pt")
    again = run_job(folder, "resumed")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from the epoch checkpoint" in again.stderr
    assert "train epoch" not in again.stderr  # both epochs were done: nothing retrained
    assert checkpoint_fingerprint(folder / "resumed.pt") == fingerprint
