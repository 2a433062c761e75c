"""Code and data push: make a rig's workdir hold exactly the files the head would run, by content.

One command lists the rig's sha256 of every file (so an unchanged rig costs one round trip), only
missing or different files travel, and a second listing proves the result. Files under a pruned
folder that the head does not have are removed: a stale module left in code/worker would change the
rig's code hash and make the worker refuse every job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from coordinator.transport import Transport
from worker import protocol
from worker.contract import code_files
from worker.files import sha256_file

MANIFEST_TIMEOUT_S = 120.0

# argv: the listed files, then "--", then folders whose every file is listed too (pycache aside).
# Prints "sha256 path" per file, "- path" for a listed file that is missing. Python 3.6+.
_MANIFEST = """\
import hashlib, os, sys
args = sys.argv[1:]
cut = args.index("--")
paths = args[:cut]
for top in args[cut + 1:]:
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        paths += [os.path.join(folder, f) for f in files]
for path in sorted(set(paths)):
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        print(digest.hexdigest(), path)
    except OSError:
        print("-", path)
"""


class DeployError(RuntimeError):
    """The rig's files do not match the head's after a push; names the rig and the file."""


@dataclass(frozen=True)
class DeployReport:
    rig: str
    pushed: tuple[str, ...]
    removed: tuple[str, ...]
    skipped: int
    bytes_pushed: int
    seconds: float

    def __str__(self) -> str:
        return (f"pushed {len(self.pushed)} files ({self.bytes_pushed:,} bytes), {self.skipped} unchanged,"
                f" {len(self.removed)} stale removed in {self.seconds:.2f} s")


def worker_bundle(package_dir: Path | None = None) -> dict[str, Path]:
    """The worker package as deploy() wants it: `code/worker/...` -> local file. On the rig,
    `PYTHONPATH=code python -m worker` then runs exactly this code."""
    package_dir = package_dir or Path(__file__).resolve().parent.parent / "worker"
    return {f"{protocol.WORKER_DIR}/{p.relative_to(package_dir).as_posix()}": p for p in code_files(package_dir)}


def remote_manifest(transport: Transport, paths: Iterable[str], prune: Iterable[str] = ()) -> dict[str, str | None]:
    """path -> sha256 on the rig (None: missing), for the paths and every file under prune, in one command."""
    done = transport.run([transport.rig.python, "-c", _MANIFEST, *paths, "--", *prune], MANIFEST_TIMEOUT_S)
    if done.returncode != 0:
        raise DeployError(f"rig '{transport.rig.name}': cannot list its files: {done.stderr.strip()}")
    manifest: dict[str, str | None] = {}
    for line in done.stdout.splitlines():
        digest, _, path = line.partition(" ")
        manifest[path] = None if digest == "-" else digest
    return manifest


def deploy(transport: Transport, files: Mapping[str, Path],
           prune: Iterable[str] = (protocol.WORKER_DIR,)) -> DeployReport:
    """Make the rig's workdir hold `files` (remote relative path -> local file), pushing only what
    differs, and remove files under `prune` folders that are not in `files` (a folder is pruned only
    when `files` has something in it, so a data-only deploy never empties code/). Raises DeployError
    if the rig does not end up with exactly these contents."""
    start = time.monotonic()
    rig = transport.rig.name
    prune = tuple(p for p in prune if any(path.startswith(p.rstrip("/") + "/") for path in files))
    wanted = {path: sha256_file(local) for path, local in files.items()}
    before = remote_manifest(transport, wanted, prune)
    stale = tuple(sorted(set(before) - set(wanted)))
    push = [path for path, digest in wanted.items() if before.get(path) != digest]
    sent = 0
    for path in push:
        data = files[path].read_bytes()
        transport.put_bytes(data, path, mode=0o644)
        sent += len(data)
    if stale:
        done = transport.run(["rm", "-f", "--", *stale], MANIFEST_TIMEOUT_S)
        if done.returncode != 0:
            raise DeployError(f"rig '{rig}': cannot remove stale files {stale}: {done.stderr.strip()}")
    if push or stale:
        after = remote_manifest(transport, wanted, prune)
        for path in sorted(set(after) | set(wanted)):
            if after.get(path) != wanted.get(path):
                raise DeployError(f"rig '{rig}': {path} has sha256 {after.get(path)} after the push,"
                                  f" expected {wanted.get(path)}")
    return DeployReport(rig, tuple(push), stale, len(wanted) - len(push), sent, time.monotonic() - start)
