"""Rig side of the SSH benchmarks: the real worker CLI with a fixed-duration trial in place of the science.

`python -m benchmarks.fake_worker serve|run ...` is `python -m worker serve|run ...` (same imports, warm
server, fork per trial, job and result files, code-hash check) except that `worker.trial.run_trial`
sleeps BENCH_TRIAL_S seconds (0: a no-op trial) and returns a fixed outcome. The worker package itself
is untouched, so the rig's code hash still matches the head's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from worker import __main__ as cli
from worker import trial
from worker.contract import Job
from worker.estimate import Figure
from worker.objective import OBJECTIVES

TRIAL_S_ENV = "BENCH_TRIAL_S"


def fixed_trial(job: Job, root: Path, cache: dict | None = None) -> trial.TrialOutcome:
    """A trial that only takes time: BENCH_TRIAL_S seconds, then a valid accuracy."""
    time.sleep(float(os.environ.get(TRIAL_S_ENV, "0")))
    accuracy = (job.trial_number * 0.618034) % 1.0  # spread over [0, 1) so the study sees distinct values
    return trial.TrialOutcome(accuracy, [], {}, "cpu", fixed_diagnostics(accuracy))


def fixed_diagnostics(value: float) -> dict[str, Any]:
    """A fixed trial's diagnostics as the coordinator reads them: every figure at `value`, from one
    replicate, with no chance level."""
    figure = Figure(value, None, [value], [], None, None, None, None, []).to_dict()
    return {"fake": True, "figures": {name: figure for name in OBJECTIVES}}


if __name__ == "__main__":
    trial.run_trial = fixed_trial  # worker.run.execute looks it up at call time
    sys.exit(cli.main())
