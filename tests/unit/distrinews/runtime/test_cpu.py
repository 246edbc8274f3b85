"""What the runtime reads of the CPU: this process's share of it, and its int8 target."""

import os
import subprocess
import sys

from devkit.processes import REPO
from distrinews.runtime.cpu import QUANTIZATION_TARGETS, cpu_flags, detect_target

PRINT_CPUS = "from distrinews.runtime.cpu import available_cpus; import os; " + (
    "print(available_cpus(), os.cpu_count())"
)


def test_available_cpus_is_this_process_share_not_the_hosts():
    """Pinned to one core (as a 1-vCPU container is), the helpers see one CPU."""
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", PRINT_CPUS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", str(os.cpu_count())], "1 CPU, on a host of more"


def test_quantization_target_follows_the_cpu_flags():
    assert detect_target() in QUANTIZATION_TARGETS
    assert (detect_target() == "avx512_vnni") == ("avx512_vnni" in cpu_flags())
