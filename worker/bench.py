"""`python -m worker bench`: time whole trials at the proposal's scale, phase by phase.

Also home of the helper that runs trials outside the coordinator (the bench, the tests): a job for a
data directory.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from worker import demo
from worker.contract import DATA_ROLES, ConfirmPayload, DataRef, Evaluation, Job, TrialPayload, code_hash
from worker.files import sha256_file
from worker.trial import run_trial

SURVIVOR_FILES = ("bidirectional_survivors_binary.npz", "survivors.npz", "survivors.json")  # Step 1's, the project's
SAMPLE_SIZE = 450
# The most expensive corner of the search space: the bench times the worst case, not a typical trial.
HEAVIEST = {"residue_mod_1": 20, "residue_mod_2": 150, "residue_mod_3": 1000, "max_offset": 15,
            "temporal_window_size": 200, "temporal_num_windows": 10, "min_confidence_threshold": 0.01,
            "hidden_layers": "256_128_64", "dropout": 0.1, "learning_rate": 1e-3, "batch_size": 32}


def make_job(data_dir: Path, params: dict[str, Any], trial_number: int = 0, sample_size: int = SAMPLE_SIZE,
             prng_type: str = "java_lcg", mod: int = 1000, evaluation: Evaluation | None = None,
             confirm: bool = False) -> Job:
    """A job for the data files in data_dir (its survivors file and the two histories), with data_dir as
    the work directory: the trial `trial_number`, or its confirmation on fresh samples."""
    survivors = next((name for name in SURVIVOR_FILES if (Path(data_dir) / name).is_file()), SURVIVOR_FILES[0])
    names = {"survivors": survivors, "train_history": "train_history.json", "holdout_history": "holdout_history.json"}
    data = {role: DataRef(names[role], sha256_file(Path(data_dir) / names[role])) for role in DATA_ROLES}
    evaluation = evaluation or Evaluation(replicates=1, eval_size=sample_size, nulls=200, objective="spearman_rho")
    kind = ConfirmPayload if confirm else TrialPayload
    payload = kind(prng_type, mod, sample_size, data, {**params, "optuna_trial_number": trial_number}, evaluation)
    return Job(study="bench", run_id="bench", trial_id=payload.task_id(), attempt=1, timeout_s=600.0,
               code_hash=code_hash(), payload=payload)


def bench(data_dir: Path, repeats: int = 5) -> dict[str, float]:
    """Median seconds per phase and per trial over `repeats` trials (different samples, one warm
    cache, as in a warm slot); writes the demo data at the proposal's scale first if data_dir has none."""
    data_dir = Path(data_dir)
    if not (data_dir / "train_history.json").exists():
        demo.write(demo.make("demo"), data_dir)
    cache: dict = {}
    runs = []
    for number in range(repeats):
        job = make_job(data_dir, HEAVIEST, trial_number=number)
        start = time.perf_counter()
        outcome = run_trial(job, data_dir, cache)
        runs.append({**outcome.timings, "trial_seconds": time.perf_counter() - start})
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    for key, value in medians.items():
        if key != "trial_seconds":
            print(f"{key:>10}: {value * 1000:8.1f} ms")
    print(f"trial_seconds={medians['trial_seconds']:.4f}")
    return medians
