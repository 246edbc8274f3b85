"""What this process may run on: CPU count and features, read once from the OS."""

import functools
import os
import platform
from pathlib import Path

#: int8 quantization targets the export step knows (Optimum's configurations).
QUANTIZATION_TARGETS = ("avx512_vnni", "avx2", "arm64")


def available_cpus() -> int:
    """CPUs this process may run on (a container's quota, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpuinfo_field(name: str) -> str:
    """The first value of `name` in /proc/cpuinfo, empty where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 Linux: /proc/cpuinfo), empty where unknown."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_name() -> str:
    """The CPU model, e.g. 'Intel(R) Xeon(R) Processor' (benchmark tables name it)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def detect_target() -> str:
    """The quantization target this machine runs best (x86 flags from /proc/cpuinfo)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    return "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"
