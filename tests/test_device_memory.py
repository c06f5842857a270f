"""reuse_freed_memory: freed large blocks stay in glibc's heap for the next step."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from primus_core.device import reuse_freed_memory
if sys.argv[1] == "on":
    assert reuse_freed_memory()
def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB, over glibc's mmap limit
    buffer.fill_(1)
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_step()
print(min(faults_of_a_step() for _ in range(3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_64_mib_block_is_reused_without_page_faults():
    """64 MiB = 16,384 pages: without the setting every step faults each page in again; with
    it the second step reuses the pages."""
    faults = {}
    for mode in ("off", "on"):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
        )
        faults[mode] = int(proc.stdout.strip())
    assert faults["off"] > 10_000 and faults["on"] < 1_000, faults
