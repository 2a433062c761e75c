import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from worker.bench import bench, make_job
from worker.contract import ContractError, make_result
from worker.demo import write_uniform
from worker.params import random_params
from worker.prng import GENERATORS
from worker.trial import run_trial

PARAMS = random_params(np.random.default_rng(4))


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    """Every draw comes from the stream of one survivor among 59 decoys."""
    root = tmp_path_factory.mktemp("one_seed")
    seeds = np.random.default_rng(9).integers(0, 2**48, size=60, dtype=np.int64)
    stream = GENERATORS["java_lcg"].draws(seeds[:1], 1, 3000, 1000)[0].tolist()
    np.savez(root / "survivors.npz", seeds=seeds)
    (root / "train_history.json").write_text(json.dumps(stream[:2400]))
    (root / "holdout_history.json").write_text(json.dumps(stream[2400:]))
    return root


def test_the_generating_seed_scores_one_on_fit_target_and_holdout(one_seed):
    outcome = run_trial(make_job(one_seed, PARAMS, sample_size=60), one_seed)
    assert outcome.diagnostics["y_fit"]["max"] == 1.0
    assert outcome.diagnostics["y_holdout"]["max"] == 1.0  # the holdout continues the stream
    assert -1.0 <= outcome.accuracy <= 1.0


def test_trials_sample_different_survivors_and_a_retry_the_same(one_seed):
    """Proposal acceptance criterion 4, and retries reproduce their trial exactly."""
    trial = {n: run_trial(make_job(one_seed, PARAMS, trial_number=n, sample_size=20), one_seed) for n in (0, 1)}
    again = run_trial(make_job(one_seed, PARAMS, trial_number=0, sample_size=20), one_seed)
    assert trial[0].sample_indices != trial[1].sample_indices
    assert again.sample_indices == trial[0].sample_indices
    assert len(set(trial[0].sample_indices)) == 20 and all(0 <= i < 60 for i in trial[0].sample_indices)
    assert again.accuracy == trial[0].accuracy
    assert again.diagnostics == trial[0].diagnostics


def test_outcome_fits_the_result_contract(one_seed):
    job = make_job(one_seed, PARAMS, sample_size=30)
    outcome = run_trial(job, one_seed, cache={})
    assert set(outcome.timings) == {"load", "features", "fit", "holdout", "objective"}
    assert outcome.device == "cpu"
    result = make_result(job.identity(), accuracy=outcome.accuracy, error=None, device=outcome.device,
                         sample_indices=outcome.sample_indices, timings=outcome.timings,
                         diagnostics=outcome.diagnostics)
    json.dumps(result, allow_nan=False)


def test_unknown_prng(one_seed):
    job = make_job(one_seed, PARAMS)
    job = dataclasses.replace(job, payload=dataclasses.replace(job.payload, prng_type="rand48"))
    with pytest.raises(ContractError) as err:
        run_trial(job, one_seed)
    assert err.value.field == "prng.type" and err.value.source == job.path == "jobs/bench/bench/trial_0000.a1.json"


def test_out_of_range_parameter(one_seed):
    job = make_job(one_seed, {**PARAMS, "max_offset": 99})
    with pytest.raises(ContractError) as err:
        run_trial(job, one_seed)
    assert err.value.field == "params.max_offset"


def test_bench_prints_phases_and_trial_seconds(tmp_path, capsys):
    # The bench makes proposal-scale data when the directory has none; a small set keeps this fast.
    write_uniform(tmp_path, n_survivors=500, n_train=1500, n_holdout=500)
    medians = bench(tmp_path, repeats=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"trial_seconds={medians['trial_seconds']:.4f}"
    assert {"load", "features", "fit", "holdout", "objective"} <= set(medians)


def test_worker_imports_only_numpy_scipy_torch():
    code = ("import sys, worker.trial, worker.bench, worker.demo; "
            "print(sorted(m for m in ('optuna', 'rich', 'paramiko', 'fabric', 'coordinator') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
