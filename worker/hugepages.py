"""The warm server's anonymous memory in 2 MiB pages, so that forking a trial's child and tearing it
down cost a few milliseconds rather than tens: both walk the page tables, 512 times smaller in huge
pages. (torch leaves ~250 MB of heap and anonymous mappings behind its import.)

Best effort, never an error: it needs transparent huge pages not set to "never", and MADV_COLLAPSE
(Linux 6.1) to collapse memory already in use; with MADV_HUGEPAGE alone, khugepaged collapses it in
the background. A child's write to a shared huge page splits it and copies 4 KiB, not 2 MiB (Linux 5.8).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25


def _page_size() -> int:
    try:
        return int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 2 << 20


def _anonymous_regions() -> list[tuple[int, int]]:
    """Private writable anonymous mappings and the heap, from /proc/self/maps."""
    found = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        name = fields[5] if len(fields) > 5 else ""
        if fields[1].startswith("rw") and fields[1].endswith("p") and name in ("", "[heap]"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end))
    return found


def huge_mib() -> int:
    """Anonymous memory of this process now in huge pages, MiB."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) // 1024
    return 0


def collapse() -> int:
    """Ask for huge pages on the process's anonymous memory, and collapse what is there now. Returns
    the MiB in huge pages afterwards (0 where the kernel cannot)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        size = _page_size()
        for start, end in _anonymous_regions():
            first, last = -(-start // size) * size, end // size * size
            if last > first:
                madvise(first, last - first, MADV_HUGEPAGE)
                madvise(first, last - first, MADV_COLLAPSE)  # EINVAL before 6.1: left to khugepaged
        return huge_mib()
    except (OSError, AttributeError, ValueError):
        return 0
