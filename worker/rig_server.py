"""The rig's server: the root of the rig's one warm process tree, `python -m worker serve`.

It pays the imports once (numpy, scipy.stats, torch, torch._dynamo, the trial's modules), parses the run's
data when the head names it, and forks one slot server (worker.serve) per slot from itself, so the slot
servers and their trials share those pages copy-on-write instead of holding a copy each. It never touches
a GPU: a slot server sets its one GPU variable right after the fork, before anything could initialise a
device, and only a trial's own process (the child a slot server forks) uses it.

One channel from the head carries every slot's lines (worker.protocol: `ADDRESS JSON`). Lines for a slot
server go into its stdin pipe unread; its stdout lines go back with its address. Each slot server leads
its own process group, so the head stops exactly one slot by killing that group; when a slot server ends,
the head is told ("slot-exit") and opens another when it needs one, forked from here without an import.
Every process of the tree dies with its parent (PR_SET_PDEATHSIG). EOF on stdin ends everything: each
slot server gets EOF too (it kills its running trial), is reaped, and its group is killed.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from worker import VERSION, contract, hugepages, protocol, serve
from worker.protocol import RIG, BadRequest, OpenSlot, Preload, Ready, SlotExit

EXIT_GRACE_S = serve.EXIT_GRACE_S + 5.0  # for slot servers to end their trials on EOF before their groups are killed


def warm_up() -> int:
    """The imports every trial needs, once for the whole rig; returns the MiB now in huge pages."""
    import scipy.stats  # noqa: F401 - the objective imports it at its first use (~1 s): once, not per trial
    import torch._dynamo  # noqa: F401 - torch.optim imports it at the first optimizer (~2 s): once, not per trial

    import worker.trial  # noqa: F401 - numpy, torch and the science imported once

    _freeze()
    return hugepages.collapse()


def _freeze() -> None:
    gc.collect()
    gc.freeze()  # later collections leave these objects alone: no copy-on-write of their pages


class _SlotServer:
    """A slot server forked from the rig's server: the pipe its requests go into, the lines it answers."""

    def __init__(self, request: OpenSlot, root: Path, own_hash: str, cache: dict, inherited: list[int]):
        """Fork it; `inherited`: the rig server's other fds, none of them the slot server's to hold."""
        requests, self.requests = os.pipe()
        answers, events = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            for fd in (requests, self.requests, answers, events):
                os.close(fd)
            raise
        if self.pid == 0:
            _slot_main(request, requests, events, [self.requests, answers, *inherited], root, own_hash, cache)
        try:  # its own group from now on, as it makes itself: a kill right after the fork reaches it
            os.setpgid(self.pid, self.pid)
        except OSError:  # it has died already: the reap will tell
            pass
        os.close(requests)
        os.close(events)
        self.address, self.index = request.slot, request.index
        self.events = serve.Lines(answers)
        self.pidfd = os.pidfd_open(self.pid)
        self.killed = False

    def fds(self) -> list[int]:
        return [fd for fd in (self.requests, self.events.fd, self.pidfd) if fd >= 0]

    def kill(self) -> None:
        """SIGKILL its whole group (its trials too). Race-free until reaped: the unreaped leader holds the id."""
        if not self.killed:
            self.killed = True
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def hang_up(self) -> None:
        """Close its stdin: it ends its trial and exits."""
        if self.requests >= 0:
            os.close(self.requests)
            self.requests = -1

    def reap(self) -> int:
        """Its exit status, once it has exited; kills what is left of its group first."""
        self.kill()
        status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        self.hang_up()
        for fd in (self.events.fd, self.pidfd):
            os.close(fd)
        self.events.fd = self.pidfd = -1
        return status


def _slot_main(request: OpenSlot, requests: int, events: int, others: list[int], root: Path, own_hash: str,
               cache: dict) -> NoReturn:
    """A freshly forked slot server: its own process group, its GPU pinned, its pipes on stdin and stdout."""
    status = 1
    try:
        os.setpgid(0, 0)
        serve.die_with_parent()  # if the rig's server died before this, stdin is at EOF: it ends at once
        for fd in others:  # the rig's ends, the other slot servers' pipes: theirs alone
            os.close(fd)
        os.dup2(requests, 0)
        os.dup2(events, 1)
        os.close(requests)
        os.close(events)
        os.environ.update(request.env)  # before anything could initialise a GPU
        status = serve.serve_slot(root, own_hash, cache)
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        traceback.print_exc()
    finally:
        os._exit(status)


class _Rig:
    """The rig server's loop: the head's lines, each slot server's answers and exits."""

    def __init__(self, root: Path, own_hash: str, lines: serve.Lines):
        self.root, self.own_hash, self.head = root, own_hash, lines
        self.cache: dict = {}
        self.servers: dict[int, _SlotServer] = {}  # by address
        self.waiting: dict[int, OpenSlot] = {}  # by index: opens waiting for the index's last server to be gone
        self.selector = selectors.DefaultSelector()
        self.selector.register(lines.fd, selectors.EVENT_READ)

    def run(self) -> int:
        try:
            while not self.head.eof:
                for key, _ in self.selector.select():
                    if key.data is None:
                        self._from_head()
                    elif self.servers.get(key.data.address) is not key.data:
                        continue  # reaped earlier in this batch: its fds are closed, maybe reused
                    elif key.fd == key.data.pidfd:
                        self._exited(key.data)
                    else:
                        self._forward(key.data)
        except BrokenPipeError:  # stdout closed: the head is gone, as at EOF
            pass
        finally:
            self._close()
        return 0

    def _from_head(self) -> None:
        self.head.feed()
        while (raw := self.head.pop()) is not None:
            line = raw.decode(errors="replace")
            try:
                to, message = protocol.split_address(line)
                if to == RIG:
                    self._request(protocol.decode_rig_request(message))
                else:
                    self._deliver(int(to), message)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                _send(RIG, BadRequest(f"bad request {line[:200]!r}: {exc}"))

    def _deliver(self, to: int, message: str) -> None:
        """A line for a slot server, unread. One that is gone has said so (or will, when reaped)."""
        server = self.servers.get(to)
        if server is not None and server.requests >= 0:
            try:
                os.write(server.requests, message.encode() + b"\n")
            except BrokenPipeError:
                pass

    def _request(self, request: OpenSlot | Preload) -> None:
        if isinstance(request, Preload):
            refs = {role: contract.DataRef(ref["path"], ref["sha256"]) for role, ref in request.data.items()}
            try:
                from worker.data import preload

                preload(refs, self.root, self.cache)
            except Exception:  # noqa: BLE001 - a trial that reads a bad file reports it properly
                pass
            _freeze()
            return
        if (superseded := self.waiting.pop(request.index, None)) is not None:
            _send(superseded.slot, SlotExit(error="superseded by a newer open of the same slot"))
        busy = [server for server in self.servers.values() if server.index == request.index]
        for server in busy:
            server.kill()
        if busy:
            self.waiting[request.index] = request
        else:
            self._fork(request)

    def _fork(self, request: OpenSlot) -> None:
        inherited = [self.selector.fileno(), *(fd for server in self.servers.values() for fd in server.fds())]
        try:
            server = _SlotServer(request, self.root, self.own_hash, self.cache, inherited)
        except OSError as exc:
            _send(request.slot, SlotExit(error=f"cannot fork the slot server: {exc}"))
            return
        self.servers[server.address] = server
        self.selector.register(server.events.fd, selectors.EVENT_READ, server)
        self.selector.register(server.pidfd, selectors.EVENT_READ, server)

    def _forward(self, server: _SlotServer) -> None:
        server.events.feed()
        _pass_on(server)
        if server.events.eof:
            self.selector.unregister(server.events.fd)

    def _exited(self, server: _SlotServer) -> None:
        """A slot server ended: its last answers, then why, then any open that waited for it. Its answers'
        pipe is unwatched here unless `_forward` saw its end, even if it ends in the loop below: the reap
        closes it, and a closed fd left watched blocks the next pipe given its number."""
        watched = not server.events.eof
        while not server.events.eof and server.events.feed():
            _pass_on(server)
        if watched:
            self.selector.unregister(server.events.fd)
        self.selector.unregister(server.pidfd)
        del self.servers[server.address]
        _send(server.address, SlotExit(exit=server.reap()))
        if (request := self.waiting.pop(server.index, None)) is not None:
            self._fork(request)

    def _close(self) -> None:
        """The head is gone: every slot server is told (EOF) and reaped; whatever is left is killed."""
        for server in self.servers.values():
            server.hang_up()
        deadline = time.monotonic() + EXIT_GRACE_S
        for server in self.servers.values():
            with selectors.DefaultSelector() as sel:
                sel.register(server.pidfd, selectors.EVENT_READ)
                sel.select(max(deadline - time.monotonic(), 0))
            server.reap()
        self.servers.clear()


def _pass_on(server: _SlotServer) -> None:
    """A slot server's complete lines, with its address, to the head."""
    while (line := server.events.pop()) is not None:
        _write(f"{server.address} ".encode() + line + b"\n")


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def _send(to: int | str, event: protocol.Event) -> None:
    _write(protocol.address(to, protocol.encode_event(event)).encode() + b"\n")


def serve_rig(root: Path) -> int:
    """Warm up, then serve the rig's slots until stdin closes."""
    huge = warm_up()
    root = root.resolve()
    own_hash = contract.code_hash()
    rig = _Rig(root, own_hash, serve.Lines(sys.stdin.fileno()))
    _send(RIG, Ready(pid=os.getpid(), pgid=os.getpgid(0), code_hash=own_hash, version=VERSION,
                     python=sys.version.split()[0], root=str(root), huge_pages_mib=huge))
    return rig.run()
