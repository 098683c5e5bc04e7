import faiss
import pytest
import torch

from gamerec_assets.core.compute import configure_threads, resolve_device


def test_resolve_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' resolves to cuda on a GPU machine")
def test_resolve_auto_on_cpu_machine_is_cpu():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resolve_auto_and_cuda_on_gpu_machine():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda").type == "cuda"


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda:0", "mps", ""])
def test_resolve_unknown_name_raises(name):
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device here")
def test_resolve_cuda_without_cuda_raises():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


@pytest.fixture
def restore_threads():
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def test_configure_threads_sets_torch_and_faiss(restore_threads):
    assert configure_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert faiss.omp_get_max_threads() == 1
    assert configure_threads(2) == 2
    assert torch.get_num_threads() == 2
    assert faiss.omp_get_max_threads() == 2


def test_configure_threads_tells_faiss_explicitly(restore_threads, monkeypatch):
    # torch and faiss may share one OpenMP runtime (then torch's setting alone would show up in
    # faiss.omp_get_max_threads), so check faiss is told directly, with the same number.
    calls = []
    real = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), real(n)))
    configure_threads(1)
    assert calls == [1]


def test_configure_threads_default_is_every_core(restore_threads, monkeypatch):
    monkeypatch.setattr("gamerec_assets.core.compute.os.cpu_count", lambda: 2)
    assert configure_threads(None) == 2
    assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2


def test_configure_threads_rejects_negative(restore_threads):
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        configure_threads(-1)
