"""Where the math runs: the torch device and the thread count, chosen in one place.

torch and faiss-cpu each ship their own OpenMP runtime and each sizes its pool to every core;
setting both from one number keeps them from oversubscribing the machine.
"""

import os

import faiss
import torch

from gamerec_assets.core.settings import DEVICES


def resolve_device(name: str) -> torch.device:
    """Map a device setting (`auto`, `cpu`, `cuda`) to a torch device, failing clearly."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    return torch.device(name)


def configure_threads(num_threads: int | None) -> int:
    """Give torch and FAISS the same thread count (default: every core) and return it."""
    threads = num_threads or os.cpu_count() or 1
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    return threads
