"""A PostgreSQL cluster in a local folder: the platform's embedded default and the tests' server.

PostgreSQL refuses to run as root, so when we are root the server runs as the
``postgres`` system user (or a ``bagula`` user we create when that is missing).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

PG_BIN_CANDIDATES = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14)]


class LocalDbError(RuntimeError):
    pass


def find_pg_bin() -> Path:
    explicit = os.environ.get("BAGULA_PG_BIN")
    candidates = [Path(explicit)] if explicit else PG_BIN_CANDIDATES
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise LocalDbError(
        "PostgreSQL server binaries not found; install them with "
        "`apt-get install -y postgresql` or set BAGULA_DATABASE_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_os_user() -> str | None:
    """The unprivileged user the server runs as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "bagula"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "bagula"],
        check=True,
    )
    return "bagula"


@dataclass
class LocalPostgres:
    """A cluster under ``base_dir``: ``data/`` (owned by the server user), ``password``, ``server.log``."""

    base_dir: Path
    port: int
    user: str = "bagula"
    # Throw-away clusters (tests, benchmarks) trade durability for speed; the
    # platform's own cluster never does.
    durable: bool = True
    # Preload TimescaleDB when its library is installed (tests turn it off to check that case).
    preload_timescaledb: bool = True

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).resolve()
        self.bin = find_pg_bin()
        self.os_user = _server_os_user()

    @property
    def timescaledb_library(self) -> bool:
        """TimescaleDB's library is installed beside these server binaries."""
        return (self.bin.parent / "lib" / "timescaledb.so").exists()

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def password_file(self) -> Path:
        return self.base_dir / "password"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def url(self, database: str = "bagula") -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.os_user:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, input=input_text)
        if result.returncode != 0:
            log = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
            raise LocalDbError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )
        return result

    def _chown(self, path: Path) -> None:
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_reachable(self) -> None:
        if not self.os_user:
            return
        probe = subprocess.run(["runuser", "-u", self.os_user, "--", "test", "-x", str(self.base_dir)])
        if probe.returncode != 0:
            raise LocalDbError(
                f"PostgreSQL runs as the unprivileged user {self.os_user!r}, which cannot reach "
                f"{self.base_dir} (a parent folder is private). Set BAGULA_DATA_DIR to a folder "
                "outside it, e.g. /var/lib/bagula, or set BAGULA_DATABASE_URL."
            )

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # The server user must be able to reach its data folder.
        self.base_dir.chmod(0o755)
        self._check_reachable()
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data_dir)
        pwfile = self.base_dir / ".initdb-password"
        pwfile.write_text(self.password_file.read_text())
        self._chown(pwfile)
        try:
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(pwfile),
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C.UTF-8", *([] if self.durable else ["--no-sync"]),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if not self.log_file.exists():
            self.log_file.touch()
        self._chown(self.log_file)

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and self._status_ok()

    def _status_ok(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status")
            return True
        except LocalDbError:
            return False

    def start(self) -> None:
        if self.running:
            return
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.data_dir}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if self.preload_timescaledb and self.timescaledb_library:
            # Installed but not preloaded, TimescaleDB cannot be created; preloaded, migrations use it.
            options.append("-c shared_preload_libraries=timescaledb")
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", " ".join(options), "-w", "-t", "60", "start",
        )

    def stop(self) -> None:
        if self.initialised and self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def create_database(self, name: str = "bagula") -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'create database "{name}"')
        return self.url(name)

    def ensure(self, database: str = "bagula") -> str:
        """Initialise if needed, start if stopped, create the database; return its URL."""
        self.init()
        self.start()
        return self.create_database(database)
