"""Data-parallel training: the pieces in one process, and a real 2-process gloo job."""

import json
import subprocess
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributed as dist

from gamerec_assets.core.distributed import (
    World,
    batch_loss,
    data_parallel,
    gather_item_vectors,
    shard_rows,
)
from gamerec_assets.core.evaluation import EvaluationData, evaluate_two_tower
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.io import file_sha256
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.splits import leave_one_out_split
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.core.trainer import (
    ACCIDENTAL_HIT_LOGIT,
    TrainConfig,
    batch_logits,
    checkpoint_extra,
    checkpoint_fingerprint,
    fit_two_tower,
    in_batch_softmax_loss,
    item_log_frequencies,
    load_checkpoint,
    playtime_weights,
    save_checkpoint,
)
from gamerec_assets.train_worker import torchrun_command


@pytest.mark.parametrize("n_rows, size", [(10, 2), (11, 2), (1, 2), (7, 3)])
def test_shards_are_contiguous_cover_the_batch_in_order_and_differ_by_at_most_one(n_rows, size):
    rows = torch.arange(n_rows) * 10
    shares = [shard_rows(rows, World(rank, size)) for rank in range(size)]
    assert torch.equal(torch.cat([share for share, _ in shares]), rows)
    sizes = shares[0][1]
    assert sizes == [len(share) for share, _ in shares] and max(sizes) - min(sizes) <= 1


def test_nccl_with_sparse_gradients_is_refused_before_anything_starts():
    model = TwoTower(5, 6, 4, "history").use_sparse_gradients(True)
    with pytest.raises(ValueError, match="GAMEREC_SPARSE_GRADIENTS=false"):
        data_parallel(model, torch.device("cuda"))


@pytest.fixture(scope="module")
def world_of_one(tmp_path_factory):
    """A real gloo process group of one process, so the collectives run in this test."""
    store = tmp_path_factory.mktemp("store") / "rendezvous"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield World(0, 1)
    dist.destroy_process_group()


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_loss_of_a_world_of_one_is_the_single_process_loss(world_of_one, weighted):
    rng = np.random.default_rng(0)
    users_np, items_np = rng.integers(0, 8, 40), rng.integers(0, 12, 40)
    items_np[:5] = 3  # accidental hits to mask
    hours = rng.uniform(0, 30, 40)
    config = TrainConfig(
        user_tower="history+id",
        normalize=True,
        temperature=0.2,
        logq_correction=True,
        mask_accidental_hits=True,
    )
    torch.manual_seed(0)
    model = TwoTower(8, 12, 6, "history+id", normalize=True)
    history = UserHistory.from_pairs(users_np, items_np, 8)
    users, items = torch.from_numpy(users_np), torch.from_numpy(items_np)
    log_q = item_log_frequencies(items_np, 12)
    weights = playtime_weights(hours) if weighted else None
    rows = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:17]

    single = in_batch_softmax_loss(
        batch_logits(model, users[rows], items[rows], history, config, log_q),
        None if weights is None else weights[rows],
    )
    towers = data_parallel(model, torch.device("cpu"))
    shared = batch_loss(
        towers,
        world_of_one,
        rows,
        users,
        items,
        history,
        config.temperature,
        log_q,
        True,
        ACCIDENTAL_HIT_LOGIT,
        None,
        weights,
    )
    torch.testing.assert_close(shared, single, rtol=1e-6, atol=1e-6)


def test_gathering_a_world_of_one_returns_the_vectors_with_their_gradient(world_of_one):
    local = torch.randn(5, 3, requires_grad=True)
    gathered = gather_item_vectors(local, [5])
    assert torch.equal(gathered, local)
    (gathered * 2).sum().backward()
    assert torch.equal(local.grad, torch.full((5, 3), 2.0))


# --- a real job: torchrun, 2 gloo processes -----------------------------------------------------

BATCH = 257  # odd: the two shares differ by one row


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


CONFIG = TrainConfig(
    epochs=4,
    batch_size=BATCH,
    embed_dim=16,
    lr=0.01,
    seed=0,
    user_tower="history",
    normalize=True,
    temperature=0.15,
    logq_correction=True,
    mask_accidental_hits=True,
    playtime_weighting=True,
    select_epochs=True,
    refit=True,
    sparse_gradients=True,
)


def test_two_gloo_processes_train_the_model_one_process_trains(job_data):
    """Same global batch: the same losses, tuning scores, metrics and (to float rounding)
    weights; a checkpoint of the same structure that loads in the single-process path."""
    folder, path, train, val, n_users, n_items = job_data
    columns = ["user_idx", "item_idx", "play_time_hours"]
    single = fit_two_tower(train.select(columns), n_users, n_items, CONFIG, progress=False)
    inputs = {path.name: file_sha256(path)}
    save_checkpoint(folder / "single.pt", single.final, checkpoint_extra(single, inputs, 1))

    job = subprocess.run(
        [
            *torchrun_command(2),
            "--train",
            str(path),
            "--n-users",
            str(n_users),
            "--n-items",
            str(n_items),
            "--config",
            json.dumps(asdict(CONFIG)),
            "--checkpoint",
            str(folder / "ddp.pt"),
            "--inputs",
            str(path),
            "--num-threads=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    """Rank 0 reads the epoch state and hands it to the others: a rerun with the same
    arguments resumes on every process (none retrains) and writes the same model."""
    folder, path, _, _, n_users, n_items = job_data
    config = TrainConfig(epochs=2, batch_size=BATCH, embed_dim=8, lr=0.01, seed=0)
    command = [
        *torchrun_command(2),
        f"--train={path}",
        f"--n-users={n_users}",
        f"--n-items={n_items}",
        f"--config={json.dumps(asdict(config))}",
        f"--checkpoint={folder / 'resumed.pt'}",
        f"--state-dir={folder / 'state'}",
        f"--inputs={path}",
        "--num-threads=1",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resuming" not in first.stderr and "train epoch 2:" in first.stderr
    fingerprint = checkpoint_fingerprint(folder / "resumed.pt")
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from the epoch checkpoint" in again.stderr
    assert "train epoch" not in again.stderr  # both epochs were done: nothing retrained
    assert checkpoint_fingerprint(folder / "resumed.pt") == fingerprint
