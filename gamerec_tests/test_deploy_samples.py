"""The Kubernetes samples cannot run here (no cluster), but what they pass to the project
must be what the project accepts: the worker's arguments and the training configuration."""

import yaml

from gamerec_assets.core.settings import env_variables
from gamerec_assets.core.training.job import TrainingJob
from gamerec_tests.conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "deploy" / "k8s"


def test_pytorchjob_runs_the_worker_on_a_job_it_accepts():
    config_map, job = yaml.safe_load_all((SAMPLES / "pytorchjob.yaml").read_text())
    description = TrainingJob.from_json(config_map["data"]["training_job.json"])
    assert description.device == "cuda" and not description.config.sparse_gradients  # NCCL
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        container = replica["template"]["spec"]["containers"][0]
        command = container["command"]
        assert command[:3] == ["python", "-m", "torch.distributed.run"]
        worker = command.index("gamerec_assets.train_worker")
        assert command[worker - 1] == "-m"
        assert command[worker + 1 :] == ["--job=/etc/gamerec/training_job.json"]
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert mounts["job"] == "/etc/gamerec"


def test_instance_sample_uses_the_k8s_run_launcher_and_known_settings():
    instance = yaml.safe_load((SAMPLES / "dagster.yaml").read_text())
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    names = [entry.split("=", 1)[0] for entry in instance["run_launcher"]["config"]["env_vars"]]
    assert set(names) <= set(env_variables())
