"""Child processes that die with their parent.

A process killed outright (SIGKILL, out of memory) cannot stop its children: they are handed to
init and go on, and a training job's workers would keep writing `staging/` after the run
died. On Linux a process can ask the kernel for a signal when its parent exits
(`prctl(PR_SET_PDEATHSIG)`); each process of the torchrun job asks for SIGKILL at start, so
killing the run takes the launcher down, and the launcher takes the workers down. A parent that
died before the request was made is caught by comparing the parent's pid with the one passed
in GAMEREC_PARENT_PID. Elsewhere (macOS) this is a no-op.

`process_identity` names a process (host, pid and start time) so that a later command can tell
whether a run's process still exists, and `gamerec materialize` can mark the runs of killed
processes as failed.
"""

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from pathlib import Path

PARENT_PID_ENV = "GAMEREC_PARENT_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when its parent exits; exit at once if the
    parent named in GAMEREC_PARENT_PID is already gone. Returns whether the request was made
    (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    expected = os.environ.get(PARENT_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os.kill(os.getpid(), sig)  # the parent died before the request: no signal will come
    return True


def children_die_with_me() -> dict[str, str]:
    """The environment entry telling children started from here who their parent is."""
    return {PARENT_PID_ENV: str(os.getpid())}


HOST = socket.gethostname()


def process_identity(pid: int | None = None) -> str:
    """`host:pid:start` of a process (this one by default): the start time tells a process
    apart from a later one that was given the same pid."""
    pid = os.getpid() if pid is None else pid
    return f"{HOST}:{pid}:{_start_ticks(pid) or '?'}"


def identity_is_running(identity: str) -> bool | None:
    """Whether the process `process_identity` described still runs: None when it ran on
    another host (nothing can be said from here)."""
    host, pid, start = _split_identity(identity)
    if host != HOST or pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    fields = _stat_fields(pid)
    if fields is None:
        return start == "?"  # no /proc: the pid alone says it
    return fields[0] != "Z" and (start == "?" or fields[19] == start)  # Z: a zombie, ended


def _split_identity(identity: str) -> tuple[str, int | None, str]:
    host, _, tail = identity.rpartition(":")  # tail: start ticks
    host, _, pid = host.rpartition(":")
    return host, int(pid) if pid.isdigit() else None, tail


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), else None."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, ..., start time at [19]."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()
