"""``serve --malloc-trim-threshold``: freed large buffers stay in the process
for reuse instead of going back to the system (and being faulted in again)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from sota_dispatch.process.malloc import MAX_MMAP_THRESHOLD, malloc_trim_threshold, set_malloc_trim_threshold

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

#: In a fresh process (the setting is process-wide): the resident memory a
#: process keeps after it allocated and freed 8 x 1 MiB, in MiB.
PROGRAM = """
import sys
from sota_dispatch.process.malloc import set_malloc_trim_threshold
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
if sys.argv[1] != "0":
    assert set_malloc_trim_threshold(int(sys.argv[1]))
before = resident()
for _ in range(20):
    blocks = [bytes(1 << 20) for _ in range(8)]
    del blocks
print((resident() - before) / (1 << 20))
"""


def kept_after_freeing(threshold: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(threshold)], capture_output=True, text=True, timeout=60, check=True
    )
    return float(done.stdout)


@glibc
def test_freed_buffers_stay_in_the_process_with_the_threshold_and_go_back_without() -> None:
    assert kept_after_freeing(64 << 20) >= 6  # reused, not faulted in again
    assert kept_after_freeing(0) < 4  # glibc's own: given back (the test can fail)


@glibc
def test_the_setting_is_reported_and_capped_for_mappings() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sota_dispatch.process.malloc import *; "
            "print(malloc_trim_threshold(), set_malloc_trim_threshold(1 << 30), malloc_trim_threshold())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["None", "True", str(1 << 30)]
    assert MAX_MMAP_THRESHOLD == 32 << 20


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        set_malloc_trim_threshold(-1)
    kept = malloc_trim_threshold()  # this process's: set by a serve.main() run here, or None
    assert kept is None or kept > 0
