"""The head's end of one rig's process tree: the rig's `python -m worker serve` on one channel, and a
`SlotProcess` for each slot server forked from it.

The first slot to open starts the rig's server (its imports, then the run's data, `Preload`); every open
forks a slot server from it (`OpenSlot`: milliseconds, no import) with the slot's GPU pinned. A thread
routes the rig's lines by address to the slot server they come from. A slot server that ends is
reported on its address, and its slot opens another when it next needs one. When the rig's server ends
(its channel closes), every slot server on it is gone, and the next open starts a new server.

Stopping one slot kills that slot server's process group over the transport, as a kill on a rig always
was: it needs no answer from the rig's server (which may be what hangs), and it cannot reach the other
slots, each in a group of its own. Closing the rig kills every group of its tree.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Mapping

from coordinator.outcome import Reason
from coordinator.transport import Process, Transport, TransportError
from worker import protocol
from worker.contract import DataRef
from worker.protocol import RIG, OpenSlot, Ping, Preload, Ready, RunRequest, SlotExit

READY_TIMEOUT_S = 180.0  # a cold torch import on a busy rig
_ROUTE_POLL_S = 3600.0


class ServerError(RuntimeError):
    """A server on the rig did not answer in time, answered something unreadable, or runs other code."""


class SlotProcess:
    """One slot server, as its slot sees it: requests out, events in, over the rig's channel. Its slot
    reads and sends; the rig's router delivers; any thread may kill it."""

    def __init__(self, server: RigServer, address: int, index: int, channel: Process):
        self.server, self.address, self.index, self.channel = server, address, index, channel
        self.pgid: int | None = None  # from its "ready"
        self._events: queue.Queue[protocol.Event | Exception] = queue.Queue()
        self._gone = threading.Event()
        self._exit = -1
        self._killed = False

    def send(self, request: RunRequest | Ping) -> None:
        """Raises TransportError('lost') once the slot server is gone or the channel broke."""
        if self._gone.is_set():
            raise TransportError(self.server.rig.name, Reason.LOST, "cannot write to the slot server: it has exited")
        try:
            self.server.send(self.channel, self.address, request)
        except TransportError as exc:  # the channel is dead: every slot server on it is gone, as its end says
            self.server.ended(self.channel, exc)
            raise

    def read(self, timeout: float) -> protocol.Event | None:
        """The next event, or None if none came within `timeout`. Raises ServerError for a line that is not
        an event, TransportError('lost') once the slot server is gone."""
        try:
            item = self._events.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        if isinstance(item, TransportError):
            self._events.put(item)  # every later read says so too
        if isinstance(item, Exception):
            raise item
        return item

    def wait(self, timeout: float) -> int | None:
        """Its exit status once it is gone (-1: never forked, or gone with the rig's server), else None."""
        return self._exit if self._gone.wait(timeout) else None

    def kill(self) -> None:
        """SIGKILL its process group on the rig (the slot server and its trial); idempotent, never raises."""
        if self.pgid is not None and not self._killed and not self._gone.is_set():
            self._killed = True
            self.server.transport.kill_groups(self.pgid)

    def deliver(self, item: protocol.Event | Exception) -> None:
        if isinstance(item, Ready):
            self.pgid = item.pgid
        self._events.put(item)

    def end(self, status: int, detail: str) -> None:
        """It is gone: every read from now on raises TransportError('lost') with `detail`."""
        self._exit = status
        self._events.put(TransportError(self.server.rig.name, Reason.LOST, detail))
        self._gone.set()


class RigServer:
    """One rig's server and the slot servers forked from it. Thread-safe: every slot of the rig shares it.

    Lifecycle: `open(index)` for each slot (the first starts the server), `close()` once at the end (kills
    the tree; a later open would start a new one)."""

    def __init__(self, transport: Transport, code_hash: str, data: Mapping[str, DataRef] | None = None):
        self.transport, self.rig, self.code_hash = transport, transport.rig, code_hash
        self.data = dict(data or {})  # parsed once by the rig's server, before its slot servers fork
        self.ready: Ready | None = None  # the running server's
        self._channel: Process | None = None
        self._slots: dict[int, SlotProcess] = {}  # by address: those not known to be gone
        self._addresses = itertools.count()  # never reused: a late line for an ended slot server finds nobody
        self._lock = threading.Lock()  # the server's start, the slot table
        self._send_lock = threading.Lock()  # whole lines on the channel
        self._starts = 0  # starts of the rig's server that have ended, started or failed
        self._failure: Exception | None = None  # why the last one failed

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The rig server's argv and environment: the rig's env, its GPU variable empty (it uses none), and
        OpenBLAS without a thread pool. The tree forks at every slot and every trial; OpenBLAS stops its
        pool before each fork and a trial's first product starts it again, for nothing: the rig's slots
        share its CPUs, one trial each."""
        rig = self.rig
        return ([rig.python, "-m", "worker", "serve", "--root", "."],
                {**rig.env, rig.gpu_env: "", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": protocol.CODE_DIR})

    def open(self, index: int) -> SlotProcess:
        """A new slot server for slot `index`; its first event is its "ready". Raises ServerError or
        TransportError when the rig's server cannot be started; slots that waited for a start that
        failed get its error rather than try again (a rig's slots open at once)."""
        waited_from = self._starts
        with self._lock:
            if self._channel is None and self._starts > waited_from and self._failure is not None:
                raise ServerError(f"{self._failure}")
            channel = self._running()
            slot = SlotProcess(self, next(self._addresses), index, channel)
            self._slots[slot.address] = slot
        try:
            self.send(channel, RIG, OpenSlot(slot.address, index, self.rig.slot_env(index)))
        except TransportError as exc:
            slot.end(-1, str(exc))
        return slot

    def send(self, channel: Process, to: int | str, request: RunRequest | Ping | OpenSlot | Preload) -> None:
        with self._send_lock:
            channel.send_line(protocol.address(to, protocol.encode_request(request)))

    def close(self) -> None:
        """Kill the tree: every slot server's group, then the rig server's."""
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            self._kill(channel)

    # -- the server's life ------------------------------------------------------------------------------

    def _running(self) -> Process:
        """The running server's channel; starts the server first if there is none (called under the lock)."""
        if self._channel is not None:
            return self._channel
        argv, env = self.command()
        try:
            channel = self.transport.start(argv, env)
            try:
                ready = self._ready(channel)
                if self.data:
                    self.send(channel, RIG, Preload({role: {"path": ref.path, "sha256": ref.sha256}
                                                     for role, ref in self.data.items()}))
            except (ServerError, TransportError):
                channel.kill()
                raise
        except (ServerError, TransportError) as exc:
            self._starts, self._failure = self._starts + 1, exc
            raise
        self._starts, self._failure = self._starts + 1, None
        self._channel, self.ready = channel, ready
        threading.Thread(target=self._route, args=(channel,), name=f"rig-{self.rig.name}", daemon=True).start()
        return channel

    def _ready(self, channel: Process) -> Ready:
        line = channel.read_line(READY_TIMEOUT_S)
        if line is None:
            raise ServerError(f"no answer from the rig's server within {READY_TIMEOUT_S:.0f} s")
        try:
            to, message = protocol.split_address(line)
            ready = protocol.decode_event(message)
        except ValueError as exc:
            raise ServerError(f"unreadable answer from the rig's server: {line[:200]!r}") from exc
        if to != RIG or not isinstance(ready, Ready):
            raise ServerError(f"the rig's server did not start: {line[:200]}")
        if ready.code_hash != self.code_hash:
            raise ServerError(f"stale worker code on the rig: {ready.code_hash[:12]} is not the head's"
                              f" {self.code_hash[:12]}")
        return ready

    def _route(self, channel: Process) -> None:
        """Deliver each line to the slot server it comes from, until the channel ends."""
        while True:
            try:
                line = channel.read_line(_ROUTE_POLL_S)
            except TransportError as exc:
                self.ended(channel, exc)
                return
            if line is not None:
                self._dispatch(line)

    def _dispatch(self, line: str) -> None:
        try:
            to, message = protocol.split_address(line)
        except ValueError:
            return  # not the protocol's: nothing on the rig writes there but its servers
        slot = None if to == RIG else self._slots.get(int(to))
        if slot is None:
            return  # the rig server's answer to a request the head never sends, or an ended slot server's
        try:
            event = protocol.decode_event(message)
        except ValueError:
            slot.deliver(ServerError(f"unreadable answer from the slot server: {message[:200]!r}"))
            return
        if not isinstance(event, SlotExit):
            slot.deliver(event)
            return
        with self._lock:
            self._slots.pop(slot.address, None)
        if event.exit is None:
            slot.end(-1, f"no slot server: {event.error}")
        else:
            slot.end(event.exit, f"the slot server exited with status {event.exit}")

    def ended(self, channel: Process, error: TransportError) -> None:
        """The rig's server is gone: so is every slot server on it. Unless close() did it, what may be left
        of its tree (a dropped connection leaves it running until it notices) is killed. Called by the
        router when the channel ends, and by a slot whose write found it dead first (the later call finds
        nothing left to do)."""
        with self._lock:
            mine = self._channel is channel
            if mine:
                self._channel = None
            slots = [slot for slot in self._slots.values() if slot.channel is channel]
            for slot in slots:
                del self._slots[slot.address]
        for slot in slots:
            slot.end(-1, f"the rig's server ended: {error.detail}")
        if mine:
            self._kill(channel, slots)

    def _kill(self, channel: Process, slots: list[SlotProcess] | None = None) -> None:
        if slots is None:
            with self._lock:
                slots = [slot for slot in self._slots.values() if slot.channel is channel]
        groups = [slot.pgid for slot in slots if slot.pgid is not None]
        if groups:
            self.transport.kill_groups(*groups)
        channel.kill()
