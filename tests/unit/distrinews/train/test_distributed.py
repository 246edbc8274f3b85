"""Process-group helpers that need no process group: does the launch fit the machine."""

import pytest
import torch

from distrinews.errors import UserError
from distrinews.runtime.cpu import available_cpus
from distrinews.train.distributed import DistInfo, check_world_fits_machine


def test_more_processes_than_cores_is_a_user_error():
    cores = available_cpus()
    fits = DistInfo(0, 0, cores, cores, torch.device("cpu"), "gloo")
    check_world_fits_machine(fits)
    too_many = DistInfo(0, 0, cores + 1, cores + 1, torch.device("cpu"), "gloo")
    with pytest.raises(UserError, match=f"nproc={cores + 1} but only {cores} CPU core"):
        check_world_fits_machine(too_many)
