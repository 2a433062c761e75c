"""What the coordinator and a rig's worker share besides the job and result formats: where everything
lives in the rig's work directory, and the warm server's line protocol. Both sides use these
definitions; neither spells a path or a message by hand.

Work directory (the rig's `workdir`, the head's too), shared by every study that uses the rig:

    code/worker/...                                        the worker package; PYTHONPATH=code
    data/<sha256>/<file>                                   a data file, in a folder named by its content
    jobs/<study>/<run_id>/<trial_id>.a<attempt>.json       an attempt's job file
    results/<study>/<run_id>/<trial_id>.a<attempt>.json    an attempt's result file
    logs/<study>/<run_id>/<trial_id>.a<attempt>.log        an attempt's log

Data is addressed by content and everything else by study and run, so two studies on the same rigs
never write each other's files: files of the same name with other contents land in other folders, and
a file two studies share is one copy that neither changes.

Serve protocol: one channel per rig carries every slot's lines, each `ADDRESS JSON`. ADDRESS `rig` is the
rig's server itself: it answers `Ready` once, and takes `Preload` (the run's data, parsed once before its
slot servers fork) and `OpenSlot` requests. Any other ADDRESS is a number the head gave a slot server when
it opened it (never reused while the rig's server lives): the head sends it `RunRequest`s (and `Ping`s);
it answers `Ready` once, then one `Done` per request, a "pong" (the `Ping` back) per ping, and an "error"
event (`BadRequest`) for a line it cannot read. When a slot server ends, or cannot be forked, the rig's
server says so on its address (`SlotExit`), its last line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum

CODE_DIR = "code"  # on PYTHONPATH: code/worker is the package
WORKER_DIR = f"{CODE_DIR}/worker"
# The modules the worker imports beyond the standard library: a rig without one cannot run it.
DEPENDENCIES = ("numpy", "scipy.stats", "torch")

# A job's exit status (in its "done" line): 0 a success, 1 the trial failed, 2 the worker refused the job:
# it cannot run here on any attempt (bad input, data that does not match its hash, stale code, a missing
# dependency), so retrying it is pointless until that is fixed.
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def data_path(sha256: str, name: str) -> str:
    """Where a data file lives: its folder is its sha256, its name keeps its format's suffix."""
    return f"data/{sha256}/{name}"


def _attempt_file(folder: str, study: str, run_id: str, tid: str, attempt: int, suffix: str) -> str:
    return f"{folder}/{study}/{run_id}/{tid}.a{attempt}.{suffix}"


def job_path(study: str, run_id: str, tid: str, attempt: int) -> str:
    """Where an attempt's job file lives, relative to a work directory (head or rig)."""
    return _attempt_file("jobs", study, run_id, tid, attempt, "json")


def result_path(study: str, run_id: str, tid: str, attempt: int) -> str:
    """Where an attempt writes its result: scoped to the study, the run and the attempt, so stale or
    late files from another study, run or attempt can never be mistaken for this one."""
    return _attempt_file("results", study, run_id, tid, attempt, "json")


def log_path(study: str, run_id: str, tid: str, attempt: int) -> str:
    return _attempt_file("logs", study, run_id, tid, attempt, "log")


RIG = "rig"  # the address of the rig's server; a slot server's is its number


class EventKind(StrEnum):
    READY = "ready"
    DONE = "done"
    PONG = "pong"
    ERROR = "error"
    SLOT_EXIT = "slot-exit"


@dataclass(frozen=True)
class RunRequest:
    """Run the job file `job` (relative to the work directory) within `timeout_s`, logging to `log`.
    `text`, when given, is the job file's content: the slot server writes it to `job` first, so a job
    travels in its request rather than in a file transfer of its own."""

    job: str
    timeout_s: float
    log: str
    text: str | None = None


@dataclass(frozen=True)
class Ping:
    """A liveness check; the server answers it with a "pong" event holding the same number."""

    ping: int


@dataclass(frozen=True)
class OpenSlot:
    """Fork a slot server for slot `index`, at address `slot`, with its GPU pinned by `env` (the rig's one
    GPU variable). Any other server of the same index is killed first, and the new one forked once that
    one is gone: one trial's process at a time per GPU."""

    slot: int
    index: int
    env: dict[str, str]


@dataclass(frozen=True)
class Preload:
    """Parse these data files (role -> {"path", "sha256"}) into the rig server's cache, so the slot servers
    forked after it, and their trials, share them."""

    data: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Ready:
    """The server is warm (imports done) and runs this code. `pgid`: a slot server leads its own process
    group, which the head kills to stop exactly that slot. `data_files`: the data files it holds parsed."""

    pid: int
    pgid: int
    code_hash: str
    version: str
    python: str
    root: str
    huge_pages_mib: int
    data_files: int = 0


@dataclass(frozen=True)
class Done:
    """A request's end. `result` is the result file's text when it is a plain file of sane size;
    `error` says why the trial died when it could not write a result to say so."""

    job: str
    exit: int
    timed_out: bool
    seconds: float
    error: str | None = None
    result: str | None = None


@dataclass(frozen=True)
class BadRequest:
    error: str


@dataclass(frozen=True)
class SlotExit:
    """A slot server ended with exit status `exit`, or was never forked (`error` says why)."""

    exit: int | None = None
    error: str | None = None


Event = Ready | Done | Ping | BadRequest | SlotExit  # a Ping event is the pong
_EVENTS: dict[EventKind, type] = {EventKind.READY: Ready, EventKind.DONE: Done, EventKind.PONG: Ping,
                                  EventKind.ERROR: BadRequest, EventKind.SLOT_EXIT: SlotExit}


def address(to: int | str, message: str) -> str:
    """A line on the rig's channel: the message for (or from) `to`, a slot server's number or RIG."""
    return f"{to} {message}"


def split_address(line: str) -> tuple[str, str]:
    """(address, message) of a line on the rig's channel; ValueError when it has no address."""
    to, sep, message = line.partition(" ")
    if not sep or not (to == RIG or to.isdigit()):
        raise ValueError(f"no address in {line[:200]!r}")
    return to, message


def encode_request(request: RunRequest | Ping | OpenSlot | Preload) -> str:
    return json.dumps({k: v for k, v in asdict(request).items() if v is not None})


def decode_request(line: str) -> RunRequest | Ping:
    """A request line; ValueError (KeyError, TypeError) when it is not one."""
    obj = json.loads(line)
    if "ping" in obj:
        return Ping(obj["ping"])
    text = obj.get("text")
    return RunRequest(str(obj["job"]), float(obj["timeout_s"]), str(obj["log"]), None if text is None else str(text))


def decode_rig_request(line: str) -> OpenSlot | Preload:
    """A request for the rig's server; ValueError (KeyError, TypeError, AttributeError) when it is not one."""
    obj = json.loads(line)
    if "data" in obj:
        return Preload({str(role): {"path": str(ref["path"]), "sha256": str(ref["sha256"])}
                        for role, ref in obj["data"].items()})
    env = {str(k): str(v) for k, v in obj["env"].items()}
    if not all(k.isidentifier() for k in env):
        raise ValueError(f"environment variable names must be identifiers: {sorted(env)}")
    return OpenSlot(int(obj["slot"]), int(obj["index"]), env)


def encode_event(event: Event) -> str:
    kind = next(k for k, cls in _EVENTS.items() if isinstance(event, cls))
    return json.dumps({"event": str(kind), **{k: v for k, v in asdict(event).items() if v is not None}})


def decode_event(line: str) -> Event:
    """An event line; ValueError when it is not one of the events, whole."""
    try:
        obj = json.loads(line)
        cls = _EVENTS[EventKind(obj.pop("event"))]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an event: {line[:200]!r}") from exc
