"""A throw-away PostgreSQL server for the distributed tests.

The machine's Debian PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``, or
``initdb`` on the PATH) initialise a cluster in a temporary folder and serve it on a free
loopback port with password authentication, so the tests also see what a real storage URL
with a password does. ``initdb`` and ``pg_ctl`` refuse to run as root: when the tests run as
root, the server runs as the ``postgres`` user (else ``nobody``). :func:`start` returns a
:class:`Server`; :meth:`Server.stop` stops it and removes its folder.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "relkd"
PASSWORD = "pg-s3cret-Pw"  # the tests check that it never shows up in what relkd writes


class NoServerBinaries(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def server_bin() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres`` (the newest Debian version)."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parts[-3]
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise NoServerBinaries("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on "
                           "the PATH; install Debian's postgresql package to run the PostgreSQL tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise NoServerBinaries("running as root and there is no postgres or nobody user to run the server as")


@dataclass
class Server:
    folder: Path
    port: int
    bin: Path
    user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), *args], user=self.user,
                              capture_output=True, text=True, check=check, timeout=120)

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate", "-w", check=False)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Server:
    """Initialise and start a server on a free loopback port; raise with the server log if it fails."""
    bin_dir = server_bin()
    user = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="relkd-pg-"))
    os.chmod(folder, 0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    (folder / "pw").write_text(PASSWORD + "\n")
    if user is not None:
        os.chown(folder / "pw", pwd.getpwnam(user).pw_uid, -1)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", USER, "--pwfile",
                        str(folder / "pw"), "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"],
                       user=user, env=env, capture_output=True, text=True, check=True, timeout=120)
        server = Server(folder, _free_port(), bin_dir, user)
        options = (f"-p {server.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = server._pg_ctl("start", "-w", "-t", "60", "-l", str(folder / "server.log"), "-o", options,
                                 check=False)
        if started.returncode != 0:
            log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log}")
    except BaseException as err:
        detail = err.stderr if isinstance(err, subprocess.CalledProcessError) else ""
        shutil.rmtree(folder, ignore_errors=True)
        if detail:
            raise RuntimeError(f"initdb failed: {detail}") from err
        raise
    deadline = time.monotonic() + 30
    while True:  # -w waits for the socket; make sure TCP answers too
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("the PostgreSQL server did not accept connections within 30 s")
            time.sleep(0.2)
