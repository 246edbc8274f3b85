"""Where things are, how long a process may take, and finding the processes a test started."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ag_news"

#: Seconds any one training, export or server process may take in a test:
#: a hang fails the test instead of holding CI for its full 90 minutes.
PROCESS_TIMEOUT = 600


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (orphan check)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def rank_pid(output_dir: Path, rank: int) -> int | None:
    """The pid of the training worker with global rank `rank`, if it is running."""
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        worker = b"pipelines.train" in cmdline and b"torchrun" not in cmdline
        if worker and str(output_dir).encode() in cmdline and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None
