"""Data-parallel training (torchrun, gloo) against one process, on Steam-200k.

The project's default model (`TrainConfig()`) for a fixed number of epochs at the
same global batch, trained
- in one process with 1 thread and with every thread, and
- as a `torchrun` job of 2 gloo processes with 1 thread each (`gamerec_assets.train_worker`),
reporting training seconds per epoch (process start-up excluded: the worker's own timer),
NDCG@20 of the result on the leave-one-out split, and the largest weight difference from
the single-process model (the two should compute the same model up to float rounding).

    .venv/bin/python benchmarks/distributed.py [--epochs 3] [--nproc 2]

Prints a table and writes benchmarks/results/distributed.json. Run it on an idle machine.
"""

import argparse
import json
import re
import subprocess
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
from datasets import steam  # benchmarks/datasets.py, beside this script

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.evaluation import evaluate_two_tower
from gamerec_assets.core.settings import TrainConfig
from gamerec_assets.core.training.checkpoint import load_checkpoint
from gamerec_assets.core.training.job import TrainingJob, fit_two_tower
from gamerec_assets.train_worker import torchrun_command


def single_process(bench, config, threads: int) -> tuple[dict, torch.nn.Module]:
    configure_threads(threads)
    data = bench.data
    fit = fit_two_tower(
        data.train, data.n_users, data.n_items, config, log=lambda _: None, progress=False
    )
    metrics = evaluate_two_tower(fit.final.model, config, data, (20,))
    row = {
        "variant": f"1 process x {threads} thread(s)",
        "seconds_per_epoch": fit.seconds / config.epochs,
        "ndcg@20": metrics["ndcg@20"],
    }
    return row, fit.final.model


def torchrun_job(bench, config, nproc: int, folder: Path) -> tuple[dict, torch.nn.Module]:
    data = bench.data
    train = folder / "train.parquet"
    data.train.write_parquet(train)
    checkpoint = folder / "two_tower.pt"
    job_file = folder / "job.json"
    job_file.write_text(
        TrainingJob(
            train_path=str(train),
            n_users=data.n_users,
            n_items=data.n_items,
            checkpoint_path=str(checkpoint),
            config=config,
            input_paths=(str(train),),
            num_threads=1,
        ).to_json()
    )
    job = subprocess.run(
        torchrun_command(nproc, job_file), capture_output=True, text=True, check=True
    )
    seconds = float(re.search(r"after ([0-9.]+)s of training", job.stderr).group(1))
    model, _ = load_checkpoint(checkpoint)
    metrics = evaluate_two_tower(model, config, data, (20,))
    row = {
        "variant": f"torchrun {nproc} processes x 1 thread (gloo)",
        "seconds_per_epoch": seconds / config.epochs,
        "ndcg@20": metrics["ndcg@20"],
    }
    return row, model


def max_weight_difference(first: torch.nn.Module, second: torch.nn.Module) -> float:
    theirs = second.state_dict()
    return max(float((v - theirs[k]).abs().max()) for k, v in first.state_dict().items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()
    config = replace(TrainConfig(), epochs=args.epochs, select_epochs=False, refit=False)
    bench = steam()
    cores = configure_threads(None)
    one_thread, reference = single_process(bench, config, 1)
    all_threads, _ = single_process(bench, config, cores)
    with tempfile.TemporaryDirectory() as folder:
        job, job_model = torchrun_job(bench, config, args.nproc, Path(folder))
    job["max_weight_difference_vs_1_process"] = max_weight_difference(reference, job_model)
    rows = [one_thread, all_threads, job]
    print(f"\n{bench.name}, {bench.data.train.height} training pairs, config {config}\n")
    print(f"{'variant':<42} {'s/epoch':>8} {'NDCG@20':>8}  max |dw|")
    for row in rows:
        diff = row.get("max_weight_difference_vs_1_process")
        print(
            f"{row['variant']:<42} {row['seconds_per_epoch']:>8.2f} {row['ndcg@20']:>8.4f}"
            + (f"  {diff:.2e}" if diff is not None else "")
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"data": bench.name, "cores": cores, "config": asdict(config), "rows": rows}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
