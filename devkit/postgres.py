"""A throwaway PostgreSQL server on 127.0.0.1 (Debian's `postgresql` package), for the
prediction log's tests: its own data folder and port, stopped and deleted at the end."""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from devkit.servers import free_port


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl (Debian keeps them out of PATH, per version)."""
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not folders:
        raise FileNotFoundError(
            "PostgreSQL not found: apt-get install postgresql (.ci/run installs it)"
        )
    return Path(folders[-1])


class Postgres:
    """initdb, then pg_ctl start on a free port. PostgreSQL refuses to run as root: as
    root, it runs as the `postgres` user the Debian package creates."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        # Not under pytest's tmp folders: their parents are private to root.
        self.folder = Path(tempfile.mkdtemp(prefix="distrinews-pg-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "log")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/log"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash (no shutdown checkpoint); `fast` a clean stop."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
