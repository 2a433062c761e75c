"""Files written whole or not at all, and content hashes: the one place either is done.

A writer goes to a temp file in the target's folder, then renames it over the target: readers see the
old file or the whole new one, never half of it. `durable` adds an fsync before the rename, for files
that must survive a machine crash (results, archives, data); a job file the head can rewrite skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` in one rename, creating its folder; nothing is left behind on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any, mode: int = 0o644, durable: bool = True) -> None:
    """`obj` as JSON (no NaN or infinity: they are not JSON), atomically (and durably unless told not to)."""
    write_atomic(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode(), mode, durable)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
