"""The Kubernetes samples cannot run here (no cluster), but what they pass to the project
must be what the project accepts: the worker's arguments and the training configuration."""

import json

import yaml

from gamerec_assets.core.trainer import TrainConfig
from gamerec_assets.resources import ENV_SETTINGS
from gamerec_assets.train_worker import build_parser
from gamerec_tests.conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "deploy" / "k8s"


def test_pytorchjob_runs_the_worker_with_arguments_it_accepts():
    job = yaml.safe_load((SAMPLES / "pytorchjob.yaml").read_text())
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        command = replica["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["python", "-m", "torch.distributed.run"]
        worker = command.index("gamerec_assets.train_worker")
        assert command[worker - 1] == "-m"
        args = build_parser().parse_args(command[worker + 1 :])
        config = TrainConfig(**json.loads(args.config))
        assert args.device == "cuda" and not config.sparse_gradients  # NCCL: dense only


def test_instance_sample_uses_the_k8s_run_launcher_and_known_settings():
    instance = yaml.safe_load((SAMPLES / "dagster.yaml").read_text())
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    names = [entry.split("=", 1)[0] for entry in instance["run_launcher"]["config"]["env_vars"]]
    assert set(names) <= set(ENV_SETTINGS)
