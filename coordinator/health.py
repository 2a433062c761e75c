"""Pre-flight checks of every rig in parallel: `coordinator check-scipy` and `coordinator check`.

One fixed probe script runs in the rig's venv python and answers with one JSON line; everything
that can fail (connection, host key, auth, interpreter, modules, GPUs, disk, stale code) becomes
a row with OK or FAIL and the reason.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.inventory import Rig
from coordinator.transport import Transport, TransportError, connect
from worker import protocol

# Runs on the rig with only the standard library guaranteed. argv: mode ("scipy" | "full"), the code folder.
PROBE = r"""
import json, os, shutil, sys
out = {"python": sys.version.split()[0], "modules": {}, "errors": []}
mods = ["scipy"] if sys.argv[1] == "scipy" else ["numpy", "scipy", "torch"]
for name in mods:
    try:
        mod = __import__(name)
        out["modules"][name] = getattr(mod, "__version__", "?")
    except Exception as exc:
        out["modules"][name] = None
        out["errors"].append("module missing: %s (%s)" % (name, exc))
try:
    from scipy.stats import spearmanr
    out["spearmanr"] = bool(spearmanr([1, 2, 3], [1, 2, 3])[0] == 1.0)
except Exception as exc:
    out["spearmanr"] = False
if sys.argv[1] == "full":
    if out["modules"].get("torch"):
        import torch
        out["gpus"] = torch.cuda.device_count()
    disk = shutil.disk_usage(".")
    out["disk_free_gb"] = round(disk.free / 1e9, 2)
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    out["mem_available_gb"] = round(int(info["MemAvailable"].split()[0]) / 1e6, 2)
    try:
        sys.path.insert(0, sys.argv[2])
        from worker import contract
        out["code_hash"] = contract.code_hash()
    except Exception:
        out["code_hash"] = None
print(json.dumps(out))
"""

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


def _probe(transport: Transport, mode: str) -> dict[str, Any]:
    done = transport.run([transport.rig.python, "-c", PROBE, mode, protocol.CODE_DIR], timeout=120.0,
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


def diagnose(transport: Transport, mode: str, head_code_hash: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """What the probe found on an open connection, and the rig's problems ([] when it is fit). Raises
    ProbeError when the probe itself cannot run."""
    found = _probe(transport, mode)
    try:
        problems = list(found["errors"]) + ([] if found.get("spearmanr") else ["scipy.stats.spearmanr unusable"])
        if mode == "full":  # stale code is no failure: step2 pushes the head's code before a rig's first trial
            deployed = found.get("code_hash")
            found["code"] = "none" if deployed is None else "current" if deployed == head_code_hash else "stale"
            problems += _full_problems(transport.rig, found)
    except (KeyError, TypeError) as exc:
        raise ProbeError("probe answer unreadable", repr(exc)) from exc
    return found, problems


def preflight(transport: Transport) -> str | None:
    """The cheap part of the check, run before a rig is used on an open connection: the rig's python
    exists and scipy.stats.spearmanr works there. Returns the problem, or None."""
    try:
        _, problems = diagnose(transport, "scipy")
    except ProbeError as exc:
        return str(exc)
    return "; ".join(problems) or None


def check_rig(rig: Rig, mode: str, head_code_hash: str | None = None) -> RigHealth:
    health = RigHealth(rig.name, rig.address, rig.python)
    transport = None
    try:
        started = time.monotonic()
        transport = connect(rig)
        health.details["connect_ms"] = round((time.monotonic() - started) * 1000, 1)
        if mode == "full":
            started = time.monotonic()
            transport.run(["true"], timeout=30.0)
            health.details["rtt_ms"] = round((time.monotonic() - started) * 1000, 1)
        found, problems = diagnose(transport, mode, head_code_hash)
        health.details.update(found)
        health.ok = not problems
        health.reason = "; ".join(problems)
    except TransportError as exc:
        health.reason = f"{exc.reason}: {exc.detail}"
    except ProbeError as exc:
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


def check_all(rigs: list[Rig], mode: str, head_code_hash: str | None = None) -> list[RigHealth]:
    with ThreadPoolExecutor(max_workers=max(1, len(rigs))) as pool:
        return list(pool.map(lambda r: check_rig(r, mode, head_code_hash), rigs))
