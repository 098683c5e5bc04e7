"""`torchrun ... -m gamerec_assets.train_worker --job JOB.json`: one process of a training job.

The `two_tower_checkpoint` asset writes the job description (`core.training.job.TrainingJob`)
and launches this through Dagster Pipes when TRAIN_NPROC > 1 (`torchrun_command`). The same
command runs unchanged in a Kubernetes job or on several machines (`--nnodes`,
`--rdzv-endpoint`). Every process runs `run_training` on the same job, as the in-process asset
does; rank 0 alone logs, writes the epoch states and the checkpoint and, when Dagster launched
the job, reports back through Pipes. Outside Dagster it logs to stderr. Each worker dies with
the torchrun agent that started it, and the agent with the run (`core.processes`): the request
comes first, before the imports that take seconds, so a worker whose agent is already gone
ends before it does anything.
"""

# ruff: noqa: E402  (the parent-death request must come before the slow imports)
if __name__ == "__main__":
    from gamerec_assets.core.processes import die_with_parent

    die_with_parent()

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

from gamerec_assets.core.compute import configure_threads, resolve_device
from gamerec_assets.core.training.job import TrainingJob, run_training
from gamerec_assets.core.training.world import backend_for, process_group


def torchrun_command(nproc: int, job_path: str | Path) -> list[str]:
    """`torchrun` on one machine, for this interpreter, starting `nproc` of this worker on the
    job described in `job_path`; through `train_launcher`, so it dies with its parent."""
    return [
        sys.executable,
        "-m",
        "gamerec_assets.train_launcher",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "gamerec_assets.train_worker",
        "--job",
        str(job_path),
    ]


def process_device(requested: str) -> torch.device:
    """CPU, or this process's own GPU (LOCAL_RANK) when CUDA is used."""
    device = resolve_device(requested)
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gamerec_assets.train_worker", description=__doc__)
    parser.add_argument("--job", required=True, help="the TrainingJob JSON the asset wrote")
    job = TrainingJob.from_json(Path(parser.parse_args(argv).job).read_text(encoding="utf-8"))
    configure_threads(job.num_threads or None)
    with process_group(process_device(job.device)) as world:
        reporting = world.is_main and bool(os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR))
        with open_dagster_pipes() if reporting else nullcontext() as pipes:
            log = pipes.log.info if pipes else _stderr
            fit = run_training(job, world, log)
            if pipes:
                pipes.report_asset_materialization(
                    metadata={
                        "world_size": world.size,
                        "backend": backend_for(world.device),
                        "fit_seconds": round(fit.seconds, 3),
                    }
                )
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
