"""Pre-flight checks of every rig in parallel: `coordinator check-scipy` and `coordinator check`.

One fixed probe script runs in the rig's venv python and answers with one JSON line; everything
that can fail (connection, host key, auth, interpreter, modules, GPUs, disk) becomes a row with OK
or FAIL and the reason. The deployed code is compared file by file with the head's worker.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.deploy import DeployError, remote_manifest, worker_bundle
from coordinator.inventory import Rig
from coordinator.transport import Transport, TransportError, connect
from worker import protocol
from worker.files import sha256_file

# Runs on the rig with only the standard library guaranteed. argv: mode ("modules" | "full"), then the
# modules to import (each reported under its package's name, with its version).
PROBE = r"""
import json, shutil, sys
out = {"python": sys.version.split()[0], "modules": {}, "errors": []}
for name in sys.argv[2:]:
    try:
        __import__(name)
        out["modules"][name.split(".")[0]] = getattr(sys.modules[name.split(".")[0]], "__version__", "?")
    except Exception as exc:
        out["modules"][name.split(".")[0]] = None
        out["errors"].append("cannot import %s (%s: %s)" % (name, type(exc).__name__, exc))
if "scipy.stats" in sys.argv[2:] and out["modules"]["scipy"]:
    try:
        from scipy.stats import spearmanr
        if spearmanr([1, 2, 3], [1, 2, 3])[0] != 1.0:
            out["errors"].append("scipy.stats.spearmanr gives a wrong answer")
    except Exception as exc:
        out["errors"].append("scipy.stats.spearmanr unusable (%s)" % exc)
if sys.argv[1] == "full":
    if out["modules"].get("torch"):
        import torch
        out["gpus"] = torch.cuda.device_count()
    disk = shutil.disk_usage(".")
    out["disk_free_gb"] = round(disk.free / 1e9, 2)
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    out["mem_available_gb"] = round(int(info["MemAvailable"].split()[0]) / 1e6, 2)
print(json.dumps(out))
"""
RTT_PINGS = 5

MIN_DISK_GB = 1.0
MIN_MEM_GB = 1.0


@dataclass
class RigHealth:
    rig: str
    address: str
    python: str
    ok: bool = False
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProbeError(Exception):
    """The probe could not run or answer: `reason` in a word, `detail` for the operator."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def _probe(transport: Transport, mode: str, modules: tuple[str, ...]) -> dict[str, Any]:
    done = transport.run([transport.rig.python, "-c", PROBE, mode, *modules], timeout=120.0,
                         env={**transport.rig.env, "PYTHONDONTWRITEBYTECODE": "1"})
    if done.returncode == 127 or "No such file" in done.stderr:
        raise ProbeError("interpreter missing", f"{transport.rig.python}: {done.stderr.strip()[:200]}")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ProbeError("probe failed", f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    try:
        return json.loads(lines[-1])
    except ValueError as exc:
        raise ProbeError("probe answer unreadable", str(exc)) from exc


def diagnose(transport: Transport, mode: str, modules: tuple[str, ...] = protocol.DEPENDENCIES,
             ) -> tuple[dict[str, Any], list[str]]:
    """What the probe found on an open connection ("modules": can the rig's python import them; "full":
    also GPUs, disk and memory), and the rig's problems ([] when it is fit). Raises ProbeError when the
    probe itself cannot run."""
    found = _probe(transport, mode, modules)
    try:
        problems = list(found["errors"])
        if mode == "full":
            problems += _full_problems(transport.rig, found)
    except (KeyError, TypeError) as exc:
        raise ProbeError("probe answer unreadable", repr(exc)) from exc
    return found, problems


def preflight(transport: Transport) -> str | None:
    """The check run before a rig is used, on an open connection: the rig's python exists and imports
    every module the worker needs (and spearmanr works). Returns the problem, or None."""
    try:
        _, problems = diagnose(transport, "modules")
    except ProbeError as exc:
        return str(exc)
    return "; ".join(problems) or None


def deployed_code(transport: Transport) -> str:
    """What the rig's workdir holds under code/worker (only there: a worker package installed in the rig's
    python does not count), against the head's worker: current, stale (how many files differ) or none.
    Stale code is no failure: a run pushes the head's code before a rig's first trial."""
    wanted = {path: sha256_file(local) for path, local in worker_bundle().items()}
    found = remote_manifest(transport, wanted, prune=(protocol.WORKER_DIR,))
    if not any(found.values()):
        return "none"
    differ = [path for path in set(found) | set(wanted) if found.get(path) != wanted.get(path)]
    return f"stale ({len(differ)} files differ)" if differ else "current"


def round_trip_ms(transport: Transport) -> float:
    """The median time a line takes to go to the rig and back over an open channel (`cat` echoes it)."""
    proc = transport.start(["cat"])
    try:
        times = []
        for n in range(RTT_PINGS):
            started = time.monotonic()
            proc.send_line(f"ping {n}")
            if proc.read_line(30.0) is None:
                raise ProbeError("no echo", "cat did not answer within 30 s")
            times.append((time.monotonic() - started) * 1000)
        return round(statistics.median(times), 2)
    finally:
        proc.kill()


def check_rig(rig: Rig, mode: str) -> RigHealth:
    """`connect ms`: opening the connection (TCP, key exchange, auth); `exec ms`: starting a command on a new
    channel and waiting for it (`true`); `rtt ms`: a round trip on an open channel."""
    health = RigHealth(rig.name, rig.address, rig.python)
    transport = None
    try:
        started = time.monotonic()
        transport = connect(rig)
        health.details["connect_ms"] = round((time.monotonic() - started) * 1000, 1)
        modules = protocol.DEPENDENCIES if mode == "full" else ("scipy.stats",)
        found, problems = diagnose(transport, "full" if mode == "full" else "modules", modules)
        health.details.update(found)
        if mode == "full":
            started = time.monotonic()
            transport.run(["true"], timeout=30.0)
            health.details["exec_ms"] = round((time.monotonic() - started) * 1000, 1)
            health.details["rtt_ms"] = round_trip_ms(transport)
            health.details["code"] = deployed_code(transport)
        health.ok = not problems
        health.reason = "; ".join(problems)
    except TransportError as exc:
        health.reason = f"{exc.reason}: {exc.detail}"
    except (ProbeError, DeployError) as exc:
        health.reason = str(exc)
    finally:
        if transport is not None:
            transport.close()
    return health


def _full_problems(rig: Rig, found: dict[str, Any]) -> list[str]:
    problems = []
    missing = [g for g in rig.gpus if g >= found.get("gpus", 0)]
    if missing:
        problems.append(f"GPU ids {missing} not present (torch sees {found.get('gpus', 0)})")
    if found["disk_free_gb"] < MIN_DISK_GB:
        problems.append(f"only {found['disk_free_gb']} GB free in the workdir")
    if found["mem_available_gb"] < MIN_MEM_GB:
        problems.append(f"only {found['mem_available_gb']} GB memory available")
    return problems


def check_all(rigs: list[Rig], mode: str) -> list[RigHealth]:
    with ThreadPoolExecutor(max_workers=max(1, len(rigs))) as pool:
        return list(pool.map(lambda r: check_rig(r, mode), rigs))
