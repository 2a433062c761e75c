"""The head's end of a rig's process tree (coordinator.rig_server) against a real rig server on this machine:
slots open from one server, stopping one slot leaves the others serving, a server that cannot start is
tried once for all the slots waiting on it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from coordinator.deploy import deploy, worker_bundle
from coordinator.inventory import Rig
from coordinator.outcome import Reason
from coordinator.rig_server import RigServer, ServerError, SlotProcess
from coordinator.slots import WarmSlot
from coordinator.transport import TransportError
from coordinator.transport.local import LocalTransport
from worker import contract
from worker.protocol import Ping, Ready


class CountingTransport(LocalTransport):
    """A local rig that counts the processes started on it."""

    starts = 0
    dead: set = set()  # processes whose channel is cut: writes fail, reads go on waiting (nothing noticed yet)

    def start(self, argv: list[str], env: dict[str, str] | None = None):  # noqa: ANN201 - LocalProcess
        self.starts += 1
        process = super().start(argv, env)
        write = process.send_line

        def send_line(line: str) -> None:
            if process in self.dead:
                raise TransportError(self.rig.name, Reason.LOST, "cannot write to the process: it has exited")
            write(line)

        process.send_line = send_line
        return process


@pytest.fixture
def transport(tmp_path: Path) -> Iterator[CountingTransport]:
    rig = Rig(name="head", python=sys.executable, workdir=str(tmp_path / "rig"), slots=2, local=True)
    opened = CountingTransport(rig)
    deploy(opened, worker_bundle())
    yield opened
    opened.close()


def ready(slot: SlotProcess) -> Ready:
    event = slot.read(180)
    assert isinstance(event, Ready), event
    return event


def test_stopping_one_slot_leaves_the_others_serving(transport: CountingTransport):
    server = RigServer(transport, contract.code_hash())
    try:
        first, second = server.open(0), server.open(1)
        assert ready(first).pgid != ready(second).pgid and transport.starts == 1  # one server, two groups
        first.kill()
        assert first.wait(10) == -9
        with pytest.raises(TransportError, match="it has exited"):
            first.send(Ping(1))
        with pytest.raises(TransportError, match="the slot server exited with status -9"):
            first.read(1)
        second.send(Ping(2))
        assert second.read(10) == Ping(2)
    finally:
        server.close()


def test_the_tree_runs_openblas_without_a_thread_pool(transport: CountingTransport):
    """Every fork would stop the pool and every trial start it again."""
    server = RigServer(transport, contract.code_hash())
    try:
        slot = server.open(0)
        for pid in (ready(slot).pid, server.ready.pid if server.ready else 0):
            assert b"OPENBLAS_NUM_THREADS=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert os.listdir(f"/proc/{pid}/task") == [str(pid)]
    finally:
        server.close()


def test_a_server_that_cannot_start_is_tried_once_for_the_slots_waiting(transport: CountingTransport):
    server = RigServer(transport, "0" * 64)  # the head's code is not the rig's
    with ThreadPoolExecutor(2) as pool:
        opens = [pool.submit(server.open, index) for index in range(2)]
    for done in opens:
        with pytest.raises(ServerError, match="stale worker code on the rig"):
            done.result()
    assert transport.starts == 1
    with pytest.raises(ServerError, match="stale worker code on the rig"):  # a later open tries again
        server.open(0)
    assert transport.starts == 2


def test_a_request_that_finds_the_channel_dead_goes_to_a_new_server(transport: CountingTransport):
    """The rig's connection dropped after the slot's last attempt and the head has not read its end yet:
    the next request cannot be written, so nothing of it reached the rig. The slot's server and its tree
    are counted gone at once, a new one starts, and the request goes there instead of failing a trial."""
    server = RigServer(transport, contract.code_hash())
    slot = WarmSlot(server, 0, build=lambda task: None)  # type: ignore[arg-type, return-value] - no job built here
    try:
        slot.start()
        old = slot.proc
        assert old is not None
        transport.dead = {old.channel}
        proc = slot._send(old, Ping(7))  # type: ignore[arg-type] - any request the slot server answers
        assert proc is not old and proc is slot.proc and transport.starts == 2
        assert proc.read(30) == Ping(7) and old.wait(0) == -1
    finally:
        slot.close()
        server.close()
