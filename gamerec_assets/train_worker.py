"""`torchrun ... -m gamerec_assets.train_worker`: one process of a data-parallel training job.

The `two_tower_checkpoint` asset launches it through Dagster Pipes when TRAIN_NPROC > 1:
`python -m torch.distributed.run --standalone --nproc-per-node N -m gamerec_assets.train_worker
...`. The same command runs unchanged in a Kubernetes job or on several machines (`--nnodes`,
`--rdzv-endpoint`). Every process reads the training split; rank 0 alone logs, writes the
epoch states and the checkpoint (the same self-describing checkpoint as in-process training,
which loads with `trainer.load_checkpoint` anywhere) and, when Dagster launched the job, reports
back through Pipes. Outside Dagster it logs to stderr.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import torch
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, PipesContext, open_dagster_pipes

from gamerec_assets.core.compute import configure_threads, resolve_device
from gamerec_assets.core.distributed import World, backend_for, process_group
from gamerec_assets.core.io import file_sha256
from gamerec_assets.core.trainer import (
    TrainConfig,
    checkpoint_extra,
    fit_two_tower,
    save_checkpoint,
)


def torchrun_command(nproc: int) -> list[str]:
    """`torchrun` on one machine, for this interpreter, starting `nproc` of this worker; its
    own arguments follow."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "gamerec_assets.train_worker",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gamerec_assets.train_worker", description=__doc__)
    parser.add_argument("--train", required=True, help="train_interactions.parquet")
    parser.add_argument("--n-users", type=int, required=True)
    parser.add_argument("--n-items", type=int, required=True)
    parser.add_argument("--config", required=True, help="TrainConfig fields as JSON")
    parser.add_argument("--split-strategy", default="max_playtime")
    parser.add_argument("--checkpoint", required=True, help="where rank 0 writes two_tower.pt")
    parser.add_argument("--state-dir", help="per-epoch training state, to resume a killed job")
    parser.add_argument(
        "--inputs",
        nargs="+",
        required=True,
        metavar="PATH",
        help="the files the model depends on (catalog.parquet, user_games.parquet, the "
        "training split); their hashes go into the checkpoint and publishing checks them",
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--num-threads", type=int, default=0, help="per process; 0 = torch's")
    return parser


def process_device(requested: str) -> torch.device:
    """CPU, or this process's own GPU (LOCAL_RANK) when CUDA is used."""
    device = resolve_device(requested)
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def train(args: argparse.Namespace, world: World, pipes: PipesContext | None) -> None:
    def log(message: str) -> None:
        if pipes is not None:
            pipes.log.info(message)
        elif world.is_main:
            print(message, file=sys.stderr, flush=True)

    def log_epoch(phase: str, epoch: int, loss: float, tuning_ndcg: float | None) -> None:
        score = "" if tuning_ndcg is None else f", tuning NDCG@20 {tuning_ndcg:.4f}"
        log(f"{phase} epoch {epoch}: loss {loss:.4f}{score}")

    device = process_device(args.device)
    config = TrainConfig(**json.loads(args.config))
    columns = ["user_idx", "item_idx", "play_time_hours"]
    data = pl.read_parquet(args.train, columns=columns)
    log(
        f"rank 0 of {world.size} processes ({backend_for(device)}): {data.height} pairs, "
        f"global batch {config.batch_size} ({config.batch_size // world.size} per process)"
    )
    fit = fit_two_tower(
        data,
        args.n_users,
        args.n_items,
        config,
        args.split_strategy,
        device,
        on_epoch_end=log_epoch,
        progress=False,
        state_dir=args.state_dir,
        log=log if world.is_main else _quiet,
        world=world,
    )
    if world.is_main:
        inputs = {Path(path).name: file_sha256(path) for path in args.inputs}
        save_checkpoint(args.checkpoint, fit.final, extra=checkpoint_extra(fit, inputs, world.size))
        log(f"wrote {args.checkpoint} after {fit.seconds:.1f}s of training")
        if pipes is not None:
            pipes.report_asset_materialization(
                metadata={
                    "world_size": world.size,
                    "backend": backend_for(device),
                    "fit_seconds": round(fit.seconds, 3),
                }
            )


def _quiet(message: str) -> None:
    del message


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_threads(args.num_threads or None)
    with process_group(process_device(args.device)) as world:
        launched_by_dagster = bool(os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR))
        if world.is_main and launched_by_dagster:
            with open_dagster_pipes() as pipes:
                train(args, world, pipes)
        else:
            train(args, world, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
