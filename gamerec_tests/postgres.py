"""A throwaway PostgreSQL server for tests: Debian's server binaries, a temporary folder, a free
port on 127.0.0.1, one database and a password-protected user, as a deployment has.

PostgreSQL refuses to run as root, so as root (CI) the server runs as the `postgres` user
(which Debian's package creates) or `nobody`; as anyone else it runs as that user.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

SERVER_BINARIES = ("initdb", "postgres")
NO_SERVER = (
    "no PostgreSQL server binaries (initdb, postgres) here; Debian: apt-get install postgresql "
    "(.ci/run installs it)"
)
STARTUP_SECONDS = 60


def server_bin_dir() -> Path | None:
    """The folder with initdb and postgres: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in SERVER_BINARIES):
            return folder
    return None


def unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` user exists")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; `dagster_env()` is what the deployment's dagster.yaml reads."""

    process: subprocess.Popen
    folder: Path
    port: int
    user: str = "gamerec_dagster"
    password: str = "test-password-not-a-secret"
    database: str = "gamerec_dagster"
    host: str = "127.0.0.1"

    def dagster_env(self) -> dict[str, str]:
        return {
            "DAGSTER_POSTGRES_HOST": self.host,
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.database,
        }

    def connect(self, database: str | None = None):
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=5,
        )

    def query(self, sql: str, *params) -> list[tuple]:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """Fast shutdown of the whole process group, then remove the folder."""
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(bin_dir: Path) -> PostgresServer:
    """initdb in a new temporary folder, then the server on a free port, then the database."""
    owner = unprivileged_user()
    as_owner = {"user": owner.pw_uid, "group": owner.pw_gid} if owner else {}
    folder = Path(tempfile.mkdtemp(prefix="gamerec-postgres-"))  # not under pytest's 0700 tmp
    password_file = folder / "password"
    password_file.write_text(PostgresServer.password + "\n")
    if owner:
        for path in (folder, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", PostgresServer.user]
        + [f"--pwfile={password_file}", "--auth=scram-sha-256", "--no-locale", "-E", "UTF8"],
        check=True,
        capture_output=True,
        cwd=folder,
        **as_owner,
    )
    port = free_port()
    with open(folder / "postgres.log", "w") as log:
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(folder / "data"), "-p", str(port)]
            + ["-c", f"listen_addresses={PostgresServer.host}"]
            + ["-c", f"unix_socket_directories={folder}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,  # its own process group, stopped as one
            **as_owner,
        )
    server = PostgresServer(process=process, folder=folder, port=port)
    try:
        _create_database(server)
    except BaseException:
        server.stop()
        raise
    return server


def _create_database(server: PostgresServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {server.log()}")
        try:
            connection = server.connect("postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections: {server.log()}") from None
            time.sleep(0.5)
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{server.database}"')
    finally:
        connection.close()
