"""Freed blocks leave the process between stages (optmodel/allocator.py): without it, glibc keeps
a run's freed temporaries on its heap once an earlier free has raised the mmap threshold, and
peak RSS grows by everything earlier stages freed."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest

# Touch one 4 MiB block and free it (glibc raises its mmap threshold to 4 MiB), then touch 64 more
# and free all but the last (a live tensor allocated after temporaries): what stays resident is
# what the allocator kept.
SCRIPT = """
import ctypes, json, sys
from optmodel.allocator import release_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size = 4 << 20
def touched():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched())
before = rss()
blocks = [touched() for _ in range(64)]
for block in blocks[:-1]:
    libc.free(block)
released = sys.argv[1] == "release" and release_freed_memory()
print(json.dumps({"released": released, "kept_mib": (rss() - before) / 2**20}))
"""


def kept_mib(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so.6" != ctypes.util.find_library("c"),
                    reason="glibc's malloc only")
def test_freed_blocks_leave_the_process_when_released():
    glibc = kept_mib("keep")
    assert not glibc["released"] and glibc["kept_mib"] > 200  # the 63 freed blocks (252 MiB) stay resident
    released = kept_mib("release")
    assert released["released"] and released["kept_mib"] < 16  # the live block only
