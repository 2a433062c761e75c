"""Figure 7: what one trial's process costs the rig's CPU before the trial does anything.

Every trial runs in a child forked from its slot server (worker.serve). Forking copies the server's
mappings and page tables, and the child's exit tears its copy down again: kernel work that grows with
what the server has imported, paid once per trial however short the trial is. At 0.25 s trials on this
2-core machine it is the largest part of what the 26 slots cost (`makespan_efficiency_250ms`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, figure

# name -> the imports of a process forked from: the rig server's (worker.rig_server.warm_up) last
IMPORTS = {"numpy": "import numpy", "torch": "import torch", "torch_scipy_stats": "import torch, scipy.stats",
           "rig_server": "from worker import rig_server; rig_server.warm_up()"}

_FORKS = r"""
import gc, json, os, sys
{imports}
gc.collect(); gc.freeze()
from worker import hugepages; hugepages.collapse()
vmas = len(open("/proc/self/maps").read().splitlines())
forks, done = {forks}, []
for i in range(forks + 5):  # the first 5 are not counted: the server's own first writes after a fork
    before = os.times()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    after = os.times()
    done.append([(after.user + after.system - before.user - before.system) * 1000,
                 (after.children_user + after.children_system - before.children_user - before.children_system) * 1000])
print(json.dumps({{"vmas": vmas, "forks": done[5:]}}))
"""


def _forks(imports: str, forks: int) -> dict[str, Any]:
    """Per fork of a child that exits at once: CPU ms of the forking process and of the child, in a fresh
    python with `imports` done (gc frozen and memory in huge pages, as the rig server leaves it)."""
    out = subprocess.run([sys.executable, "-c", _FORKS.format(imports=imports, forks=forks)], cwd=REPO,
                         check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.splitlines()[-1])


def run_fork_cost(work: Path, repeats: int = 3, forks: int = 50) -> dict[str, Any]:
    """`trial_process_ms`: CPU milliseconds of one trial's process with no trial in it (the fork, in the
    forking process, plus the child's exit, in the child: user and system time from `os.times`, which
    counts in 10 ms ticks, so per fork it is the mean over `forks` forks), forked from a python with the
    rig server's imports; `by_imports`: the same from pythons with fewer imports, with the mappings
    (`vmas`) each holds. The kernel's work grows with the mappings: each shared library maps 4-5 of
    them, and scipy.stats loads about 90 of scipy's."""
    by: dict[str, dict[str, Any]] = {}
    vmas: dict[str, int] = {}
    for name, imports in IMPORTS.items():
        runs = [_forks(imports, forks) for _ in range(repeats)]
        mean = [[sum(f[k] for f in run["forks"]) / forks for k in (0, 1)] for run in runs]
        by[name] = figure([p + c for p, c in mean], "ms", fork_ms=figure([p for p, _ in mean], "ms"),
                          exit_ms=figure([c for _, c in mean], "ms"))
        vmas[name] = runs[0]["vmas"]
    full = by.pop("rig_server")
    return {"trial_process_ms": {**full, "forks": forks, "by_imports": by, "vmas": vmas}}
