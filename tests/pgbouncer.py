"""A real PgBouncer in transaction mode in front of the test Postgres: what hosted users have.

Debian's ``pgbouncer`` package (``make test`` installs it where missing: ``.ci/ensure-pgbouncer``).
Started once per session on a free port with ``default_pool_size=2``, so that server connections
are shared across clients and anything leaning on session state (named prepared statements,
session advisory locks, ``SET``, temp tables) shows. It refuses to run as root, so as root it
drops to a user (``-u``) that can read its files and reach the server: ``postgres`` for a TCP
server, the socket directory's owner for a Unix socket. Missing pgbouncer fails the tests loudly; they never skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["PgBouncer", "USERS"]

USERS = ("postgres", "root", "outbox_app")  # roles the tests connect as (trust auth needs them listed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if found is None:
        raise RuntimeError(
            "pgbouncer is not installed: the pooler tests need Debian's pgbouncer package"
            " (`make test` installs it as root: .ci/ensure-pgbouncer; or `apt-get install pgbouncer`)"
        )
    return found


class PgBouncer:
    """PgBouncer (transaction pooling) forwarding every database to the server of ``target_dsn``."""

    def __init__(self, target_dsn: str, *, pool_mode: str = "transaction", pool_size: int = 2) -> None:
        parts = urlsplit(target_dsn)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        self._server = f"host={host} port={parts.port or 5432}"
        # As root it must drop to a user that can reach the server: through a Unix socket (the
        # embedded server's lives in its own 0700 data directory), the directory's owner.
        self._user = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "postgres"
        self._pool_mode = pool_mode
        self._pool_size = pool_size
        self._dir = Path(tempfile.mkdtemp(prefix="outbox-pgbouncer-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        """Start it and wait until it accepts connections (raise with its log if it does not)."""
        self.port = _free_port()
        self._dir.chmod(0o755)
        users = self._dir / "users.txt"
        users.write_text("".join(f'"{u}" ""\n' for u in USERS))
        ini = self._dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = {self._server}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {self._pool_mode}\n"
            f"default_pool_size = {self._pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self._dir / 'pgbouncer.log'}\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        command = [_binary()]
        if os.geteuid() == 0 and self._user != "root":
            command += ["-u", self._user]
            log = self._dir / "pgbouncer.log"
            log.touch()
            shutil.chown(log, self._user)
        self._proc = subprocess.Popen(command + [str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited at start: {err.strip()} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        """Its log file so far (for failure messages)."""
        try:
            return (self._dir / "pgbouncer.log").read_text()[-2000:]
        except OSError:
            return ""

    def dsn(self, dsn: str) -> str:
        """The same database and user as ``dsn``, reached through PgBouncer."""
        parts = urlsplit(dsn)
        user = parts.username or "postgres"
        auth = f"{user}:{parts.password}@" if parts.password else f"{user}@"
        return urlunsplit(("postgresql", f"{auth}127.0.0.1:{self.port}", parts.path, "", ""))

    def close(self) -> None:
        """Stop it and remove its files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)
