"""Opening the inventory's rigs for a run: connect, pre-flight, push the code (and the run's data).
Every command that runs work on rigs (step2, run, and Step 3 to come) opens them here, in parallel;
a rig that fails any step is left out of the run with its reason, and the run goes on without it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from coordinator.deploy import DeployError, deploy
from coordinator.events import one_line
from coordinator.health import preflight
from coordinator.inventory import Rig
from coordinator.transport import Transport, TransportError, connect


class RigsError(RuntimeError):
    """The run cannot go on with the rigs that opened; the message names every rig left out and why."""


@dataclass
class OpenRigs:
    """The rigs a run may use, by name, and the ones left out with why."""

    transports: dict[str, Transport] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()

    def check_usable(self, require_all: bool = False) -> None:
        """Raise RigsError, with every connection closed, when no rig opened, or when `require_all` and
        any rig was left out (`--require-all-rigs`)."""
        if self.transports and not (require_all and self.excluded):
            return
        self.close()
        why = "; ".join(f"{rig}: {one_line(reason)}" for rig, reason in sorted(self.excluded.items()))
        raise RigsError(f"--require-all-rigs: rigs left out: {why}" if self.transports else f"no rig is usable: {why}")


def open_rigs(rigs: list[Rig], files: dict[str, Path], out: TextIO) -> OpenRigs:
    """Connect to every rig, check it, and make its workdir hold `files` (workdir path -> head file)."""
    opened = OpenRigs()
    lock = threading.Lock()

    def open_one(rig: Rig) -> None:
        transport = None
        try:
            transport = connect(rig)
            problem = preflight(transport)
            if problem:
                raise DeployError(f"pre-flight check failed: {problem}")
            report = deploy(transport, files)
            with lock:  # print under the lock too: print() from threads can splice lines together
                opened.transports[rig.name] = transport
                print(f"deploy {rig.name}: {report}", file=out, flush=True)
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, this rig is left out with why
            if transport is not None:
                transport.close()
            why = f"{exc.reason}: {exc.detail}" if isinstance(exc, TransportError) else str(exc)  # rig named once
            with lock:
                opened.excluded[rig.name] = why
                print(f"rig {rig.name} left out of the run: {one_line(why)}", file=out, flush=True)

    with ThreadPoolExecutor(max_workers=max(1, len(rigs))) as pool:
        list(pool.map(open_one, rigs))
    return opened
