"""Long-running commands for tests (a code server, a webserver, a daemon): each in its own
process group, logging to a file, stopped as a group, with its log in every failure message."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
STOP_SECONDS = 60
LOG_TAIL_CHARS = 5000


class Service:
    """One command: `start()`, `stop()` and the tail of its log."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_dir: Path
    ) -> None:
        self.name, self.argv, self.env, self.cwd = name, list(argv), dict(env), cwd
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        with open(self.log_path, "a") as log:
            log.write(f"\n--- starting: {' '.join(self.argv)}\n")
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: it and whatever it starts
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log (last {LOG_TAIL_CHARS} chars) ---\n{text[-LOG_TAIL_CHARS:]}"

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after STOP_SECONDS; a no-op once stopped."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        try:  # children that outlived their parent in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None


def wait_for(
    what: str,
    found: Callable[[], T | None],
    timeout: float,
    services: Sequence[Service] = (),
    interval: float = 1.0,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `found` until it returns something (an exception in `retry_on` counts as nothing
    yet); fail naming `what`, with the services' logs, when a service died or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [service.name for service in services if not service.running()]
        result = None
        if not dead:
            try:
                result = found()
            except retry_on:
                pass
        if result is not None:
            return result
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"not within {timeout:.0f} s"
            logs = "\n".join(service.log_tail() for service in services)
            raise AssertionError(f"waiting for {what}: {reason}\n{logs}")
        time.sleep(interval)
