"""Processes that die with their parent, and telling whether a run's process still exists."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gamerec_assets.core.processes import (
    HOST,
    PARENT_PID_ENV,
    identity_is_running,
    process_identity,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

GRANDCHILD = """
import subprocess, sys, os
child = subprocess.Popen([sys.executable, "-c", '''
from gamerec_assets.core.processes import die_with_parent
import time
die_with_parent()
time.sleep(120)
'''], env={**os.environ, "GAMEREC_PARENT_PID": str(os.getpid())})
print(child.pid, flush=True)
child.wait()
"""


@linux_only
def test_a_child_that_asked_dies_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # let the child make its request
    assert identity_is_running(process_identity(child))
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while identity_is_running(process_identity(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = not identity_is_running(process_identity(child))
    if not gone:
        os.kill(child, signal.SIGKILL)
    assert gone, "the child outlived its killed parent"


@linux_only
def test_a_child_whose_parent_died_before_it_asked_ends_at_once():
    asked = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gamerec_assets.core.processes import die_with_parent; die_with_parent(); "
            "print('still here')",
        ],
        env={**os.environ, PARENT_PID_ENV: "1"},  # not its parent: that one is gone
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == -signal.SIGKILL and asked.stdout == ""


def test_a_process_identity_tells_a_gone_process_and_a_reused_pid_apart():
    me = process_identity()
    assert identity_is_running(me) is True
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert identity_is_running(process_identity(ended.pid)) is False
    host, pid, _ = me.rsplit(":", 2)
    assert identity_is_running(f"{host}:{pid}:1") is False  # same pid, another start
    assert identity_is_running(f"elsewhere-{HOST}:{pid}:1") is None  # cannot tell from here
