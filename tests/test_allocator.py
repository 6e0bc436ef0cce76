"""Freed large blocks leave the process (optmodel/allocator.py): without it, glibc keeps a run's
freed temporaries on its heap once an earlier free has raised the mmap threshold, and peak RSS
grows by everything a run ever freed."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest

# Touch one 4 MiB block and free it (glibc raises its mmap threshold to 4 MiB), then touch 64 more
# and free all but the last: what stays resident is what the allocator kept.
SCRIPT = """
import ctypes, json, sys
from optmodel.allocator import return_large_frees_to_os
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
fixed = sys.argv[1] == "fixed" and return_large_frees_to_os()
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
print(json.dumps({"fixed": fixed, "kept_mib": (rss() - before) / 2**20}))
"""


def kept_mib(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so.6" != ctypes.util.find_library("c"),
                    reason="glibc's malloc only")
def test_freed_blocks_leave_the_process_once_the_threshold_is_fixed():
    glibc = kept_mib("default")
    assert not glibc["fixed"] and glibc["kept_mib"] > 200  # the 63 freed blocks (252 MiB) stay resident
    fixed = kept_mib("fixed")
    assert fixed["fixed"] and fixed["kept_mib"] < 16  # the live block only
