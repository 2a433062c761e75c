"""Figures 5 and 6: what a rig's warm process tree costs to start and to keep, through real SSH on loopback.

A rig is a loopback OpenSSH server (benchmarks.rigs); its slots are real WarmSlots whose slot servers are
forked from one real rig server (`python -m worker serve`, with benchmarks.fake_worker's fixed trial).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.dispatch import FixedJobs, schedule
from benchmarks.report import figure
from benchmarks.rigs import KeepWarm, Loopback, start_all
from coordinator.settings import new_run_id
from coordinator.transport import Transport

SLOTS = 8


def _warm_up(lb: Loopback, transport: Transport, slots: int) -> tuple[float, list[KeepWarm]]:
    """Seconds from a fresh rig server's start to `slots` slots ready (all starting at once), and the slots."""
    warm = lb.slots(lb.rig_server(transport), slots)
    start = time.monotonic()
    start_all(warm)
    return time.monotonic() - start, warm


def _kib(pid: int, key: str) -> int:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(rollup.split(f"\n{key}:")[1].split()[0])


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _spares(slot_servers: list[int]) -> list[int] | None:
    """Each slot server's one child (its spare), or None while a finished trial's child is beside it."""
    children = [_children(pid) for pid in slot_servers]
    return [found[0] for found in children] if all(len(found) == 1 for found in children) else None


def _memory(rig_server: int, slot_servers: list[int]) -> dict[str, Any]:
    """PSS of the whole tree per slot, MB, once every slot server holds just its spare; and its parts."""
    for _ in range(300):
        spares = _spares(slot_servers)
        time.sleep(0.1)
        if spares is None or spares != _spares(slot_servers):
            continue
        try:
            pss = {pid: _kib(pid, "Pss") / 1024 for pid in (rig_server, *slot_servers, *spares)}
            rss = [_kib(pid, "Rss") / 1024 for pid in slot_servers]
        except (OSError, IndexError):  # a child gone while it was read
            continue
        return {"total": sum(pss.values()) / len(slot_servers), "rig_server": pss[rig_server],
                "slot_server": statistics.mean(pss[pid] for pid in slot_servers),
                "spare": statistics.mean(pss[pid] for pid in spares), "slot_server_rss": statistics.mean(rss)}
    raise RuntimeError("the slot servers never settled to one spare child each")


def run_tree(work: Path, repeats: int = 3) -> dict[str, Any]:
    """One loopback SSH rig with 8 slots. `rig_warmup_s`: from starting a fresh rig server to its 8 slots
    ready (its imports once, then 8 slot servers forked from it, all opened at once as the scheduler opens
    them); `one_slot_s`: the same for one slot, measured alternately on the same rig, so
    `rig_warmup_ratio` = 8 slots / one slot is measured under the same load. `slot_pss_mb`: after two
    no-op trials per slot, the proportional set size (shared pages split between the processes sharing
    them, from /proc/PID/smaps_rollup) of the whole tree (the rig server, 8 slot servers, each one's spare
    child forked ahead for its next trial) divided by 8; its parts per process, and each slot server's
    RSS (which counts every shared page in full) beside it."""
    with Loopback(work) as lb:
        transport = lb.ssh_rig("rig8", SLOTS, trial_s=0.0)
        eight: list[float] = []
        one: list[float] = []
        memory: list[dict[str, Any]] = []
        for _ in range(repeats):
            seconds, warm = _warm_up(lb, transport, 1)
            one.append(seconds)
            warm[0].slot.server.close()
            seconds, warm = _warm_up(lb, transport, SLOTS)
            eight.append(seconds)
            schedule(lb, warm, FixedJobs(replace(lb.settings, run_id=new_run_id()), 2 * SLOTS))
            server = warm[0].slot.server
            assert server.ready is not None
            memory.append(_memory(server.ready.pid, [slot.slot.proc.pgid for slot in warm
                                                     if slot.slot.proc and slot.slot.proc.pgid]))
            server.close()
    ratios = [a / b for a, b in zip(eight, one, strict=True)]

    def part(key: str) -> dict[str, Any]:
        return figure([m[key] for m in memory], "MB")

    return {"rig_warmup_s": figure(eight, "s", slots=SLOTS, one_slot_s=figure(one, "s")),
            "rig_warmup_ratio": figure(ratios, "x", slots=SLOTS),
            "slot_pss_mb": figure([m["total"] for m in memory], "MB", slots=SLOTS, rig_server_pss_mb=part("rig_server"),
                                  slot_server_pss_mb=part("slot_server"), spare_pss_mb=part("spare"),
                                  slot_server_rss_mb=part("slot_server_rss"))}
