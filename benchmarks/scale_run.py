"""Scale run: 1M users x 100k games x 20M interactions through the whole graph on one machine.

1. Generates the synthetic interactions (the project's generator: power-law popularity, genre
   tastes, log-normal hours; with `--history power_law`, the default, heavy-tailed history
   lengths: most players own a few games, a few own thousands) and writes them to a Parquet
   file; timed apart, it is not part of the pipeline.
2. Runs `gamerec materialize` on that file as a user would, in a fresh working folder
   (DAGSTER_HOME, DATA_DIR, ARTIFACTS_DIR), with the settings below, as a child process whose
   peak resident memory the kernel reports (getrusage of children).
3. Reads each step's duration from the run's event log, the metrics from metrics.json and the
   index's recall against exact search from the index materialization.

The model is the default one (dim 256, epochs selected on a tuning split, the history
sample, the search); the settings beyond the defaults are about evaluation and serving: a
seeded sample of 100,000 users evaluated (GAMEREC_EVAL_USERS), an HNSW index, and no ALS
baseline (its tuning grid is about ten fits of 20M pairs: a benchmark of its own, not of the
model). EASE is skipped above 30,000 games anyway. `--set NAME=VALUE` adds settings.

    .venv/bin/python benchmarks/scale_run.py [--interactions 20000000] [--history power_law]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gamerec_assets.core.io import write_parquet_atomic
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions

SCALE_SETTINGS = {
    "GAMEREC_EVAL_USERS": "100000",
    "GAMEREC_EASE_BASELINE": "false",
    "GAMEREC_INDEX": "hnsw",
    "GAMEREC_ALS_BASELINE": "false",
}


MEASURE_CHILD = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
open(sys.argv[1], "w").write(json.dumps({"exit_code": code, "peak_kib": peak}))
"""


def generate(path: Path, spec: SyntheticSpec) -> dict:
    started = time.perf_counter()
    frame = generate_synthetic_interactions(spec)
    write_parquet_atomic(frame, path)
    return {
        "rows": frame.height,
        "seconds": time.perf_counter() - started,
        "file_mib": path.stat().st_size / 2**20,
    }


def run_materialize(workdir: Path, settings: dict[str, str]) -> dict:
    """`gamerec materialize --all` in a fresh working folder: wall time and peak memory.

    The command runs under a small fresh interpreter that reports its child's peak resident
    memory: a child forked straight from this (large) process would count this process's
    pages in its peak.
    """
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        **settings,
        "DATA_DIR": str(workdir / "data"),
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
        "DAGSTER_HOME": str(home),
    }
    report = workdir / "peak.json"
    command = [sys.executable, "-m", "gamerec_assets.cli", "materialize", "--all"]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", MEASURE_CHILD, str(report), *command], env=env, check=True
    )
    wall = time.perf_counter() - started
    measured = json.loads(report.read_text())
    if measured["exit_code"] != 0:
        raise SystemExit(f"gamerec materialize failed in {workdir} (exit {measured['exit_code']})")
    return {"wall_seconds": wall, "peak_rss_gib": measured["peak_kib"] / 2**20}


def step_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS of each step, over the instance's runs (the
    input fingerprint run, then the graph run), oldest first."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    starts, seconds = {}, {}
    events = [e for run in instance.get_runs()[::-1] for e in instance.all_logs(run.run_id)]
    for event in events:
        if event.dagster_event is None:
            continue
        kind = event.dagster_event.event_type_value
        if kind == "STEP_START":
            starts[event.step_key] = event.timestamp
        elif kind == "STEP_SUCCESS":
            seconds[event.step_key] = event.timestamp - starts[event.step_key]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/gamerec-scale")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--games", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--history", default="power_law", choices=["power_law", "lognormal"])
    parser.add_argument("--out", default="benchmarks/results/scale_run.json")
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE, a setting")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "interactions.parquet"
    spec = SyntheticSpec(
        n_users=args.users,
        n_games=args.games,
        n_interactions=args.interactions,
        history_lengths=args.history,
    )
    generated = generate(source, spec)
    print(f"generated {generated['rows']:,} interactions in {generated['seconds']:.1f} s")

    settings = {
        **SCALE_SETTINGS,
        **extra,
        "GAMEREC_SOURCE": "interactions",
        "GAMEREC_SOURCE_PATH": str(source),
    }
    measured = run_materialize(workdir, settings)
    wall, peak_gib = measured["wall_seconds"], measured["peak_rss_gib"]
    metrics = json.loads((workdir / "artifacts" / "metrics.json").read_text())
    index = json.loads((workdir / "artifacts" / "index.json").read_text())
    searched = json.loads((workdir / "artifacts" / "staging" / "tuned_settings.json").read_text())
    result = {
        "spec": {"users": spec.n_users, "games": spec.n_games, "interactions": spec.n_interactions},
        "settings": {**SCALE_SETTINGS, **extra},
        "generation": generated,
        "wall_seconds": wall,
        "peak_rss_gib": peak_gib,
        "steps": step_seconds(workdir / "dagster_home"),
        "k": metrics["k"],
        "metrics": {key: value for key, value in metrics.items() if "@" in key or key == "mrr"},
        "popularity": metrics["baselines"]["popularity"],
        "n_eval_users": metrics["n_eval_users"],
        "index": index,
        "search": searched
        and {key: searched[key] for key in ("params", "best_epoch", "tuning_curve", "trials")},
        "threads": os.cpu_count(),
    }
    print(f"\n{'step':<60} {'seconds':>9}")
    for step, seconds in result["steps"].items():
        print(f"{step:<60} {seconds:>9.1f}")
    k = metrics["k"]
    print(
        f"\nwhole graph: {wall / 60:.1f} min, peak memory {peak_gib:.2f} GiB; "
        f"model recall@{k} {metrics[f'recall@{k}']:.4f} vs popularity "
        f"{metrics['baselines']['popularity'][f'recall@{k}']:.4f} "
        f"on {metrics['n_eval_users']:,} sampled users"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
