"""rigs.toml: the one inventory that dispatch, code push, collection and health checks all read."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPU_ENV_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class InventoryError(ValueError):
    """rigs.toml is wrong; the message names the file, the rig and the key."""


@dataclass(frozen=True)
class Rig:
    name: str
    python: str
    workdir: str
    slots: int
    gpus: tuple[int, ...] = ()
    gpu_env: str = "CUDA_VISIBLE_DEVICES"
    env: dict[str, str] = field(default_factory=dict)
    stagger_s: float = 0.0
    local: bool = False
    host: str = ""
    port: int = 22
    user: str = ""
    identity_file: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    connect_timeout_s: float = 10.0

    def slot_gpu(self, slot: int) -> int | None:
        """The GPU id pinned for a slot, or None on a CPU-only rig."""
        return self.gpus[slot % len(self.gpus)] if self.gpus else None

    def slot_env(self, slot: int) -> dict[str, str]:
        """The rig's extra env plus exactly one variable pinning the slot's GPU (empty: no GPU)."""
        gpu = self.slot_gpu(slot)
        return {**self.env, self.gpu_env: "" if gpu is None else str(gpu)}

    @property
    def address(self) -> str:
        return "local" if self.local else f"{self.user}@{self.host}:{self.port}"


# key: (type(s), required for ssh rigs, required for local rigs)
_KEYS: dict[str, tuple[Any, bool, bool]] = {
    "name": (str, True, True),
    "python": (str, True, True),
    "workdir": (str, True, True),
    "slots": (int, False, False),
    "gpus": (list, False, False),
    "gpu_env": (str, False, False),
    "env": (dict, False, False),
    "stagger_s": ((int, float), False, False),
    "local": (bool, False, False),
    "host": (str, True, False),
    "port": (int, False, False),
    "user": (str, True, False),
    "identity_file": (str, False, False),
    "known_hosts": (str, False, False),
    "connect_timeout_s": ((int, float), False, False),
}


def _rig(path: Path, index: int, raw: Any) -> Rig:
    label = f"{path}: rig #{index + 1}"
    if not isinstance(raw, dict):
        raise InventoryError(f"{label}: each [[rig]] must be a table")
    if isinstance(raw.get("name"), str):
        label = f"{path}: rig '{raw['name']}'"
    for key in raw:
        if key not in _KEYS:
            raise InventoryError(f"{label}: unknown key '{key}' (known: {', '.join(_KEYS)})")
    local = raw.get("local", False)
    for key, (kind, need_ssh, need_local) in _KEYS.items():
        if key not in raw:
            if need_local or (need_ssh and local is False):
                raise InventoryError(f"{label}: missing key '{key}'")
            continue
        value = raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise InventoryError(f"{label}: key '{key}' must be {' or '.join(k.__name__ for k in kinds)},"
                                 f" got {type(value).__name__} {value!r}")
    gpus = raw.get("gpus", [])
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus):
        raise InventoryError(f"{label}: key 'gpus' must be a list of GPU ids (integers >= 0)")
    if len(set(gpus)) != len(gpus):
        raise InventoryError(f"{label}: key 'gpus' lists a GPU twice")
    slots = raw.get("slots", len(gpus))
    if slots < 1:
        raise InventoryError(f"{label}: key 'slots' must be >= 1 (or give 'gpus')")
    gpu_env = raw.get("gpu_env", "CUDA_VISIBLE_DEVICES")
    if gpu_env not in GPU_ENV_VARS:
        raise InventoryError(f"{label}: key 'gpu_env' must be one of {', '.join(GPU_ENV_VARS)}")
    env = raw.get("env", {})
    for k, v in env.items():
        if not isinstance(v, str) or not k.isidentifier():
            raise InventoryError(f"{label}: key 'env.{k}' must be NAME = \"string\"")
        if k in GPU_ENV_VARS:
            raise InventoryError(f"{label}: key 'env.{k}' pins GPUs; use 'gpu_env' and 'gpus' instead")
    port = raw.get("port", 22)
    if not 1 <= port <= 65535:
        raise InventoryError(f"{label}: key 'port' must be 1..65535")
    if raw.get("stagger_s", 0) < 0 or raw.get("connect_timeout_s", 10) <= 0:
        raise InventoryError(f"{label}: 'stagger_s' must be >= 0 and 'connect_timeout_s' > 0")
    python, workdir = raw["python"], raw["workdir"]
    if local:  # the head's relative paths are relative to the inventory file, not to the caller's cwd
        python = _beside(path, python) if "/" in python else python
        workdir = _beside(path, workdir)
    return Rig(
        name=raw["name"], python=python, workdir=workdir, slots=slots, gpus=tuple(gpus),
        gpu_env=gpu_env, env=dict(env), stagger_s=float(raw.get("stagger_s", 0.0)), local=local,
        host=raw.get("host", ""), port=port, user=raw.get("user", ""),
        identity_file=raw.get("identity_file"), known_hosts=raw.get("known_hosts", DEFAULT_KNOWN_HOSTS),
        connect_timeout_s=float(raw.get("connect_timeout_s", 10.0)),
    )


def _beside(inventory: Path, value: str) -> str:
    expanded = Path(value).expanduser()
    return os.path.abspath(inventory.parent / expanded)  # abspath: a venv python is a symlink to keep


def parse_inventory(text: str, path: Path) -> list[Rig]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(doc) - {"rig"}
    if unknown:
        raise InventoryError(f"{path}: unknown top-level key '{sorted(unknown)[0]}' (only [[rig]] tables)")
    raws = doc.get("rig")
    if not isinstance(raws, list) or not raws:
        raise InventoryError(f"{path}: no [[rig]] tables: the inventory needs at least one rig")
    rigs = [_rig(path, i, raw) for i, raw in enumerate(raws)]
    seen: set[str] = set()
    for rig in rigs:
        if rig.name in seen:
            raise InventoryError(f"{path}: rig '{rig.name}': duplicate name")
        seen.add(rig.name)
    if sum(r.local for r in rigs) > 1:
        raise InventoryError(f"{path}: more than one rig has local = true (there is one head)")
    return rigs


def load_inventory(path: str | Path) -> list[Rig]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read inventory: {exc.strerror or exc}") from exc
    return parse_inventory(text, path)
