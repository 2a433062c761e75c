"""The job/result contract: every field validated, paths kept inside the work directory, names
that could reach a shell refused, stale or foreign results rejected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from worker import contract, files

HASH = "0" * 64


def job_dict(**changes) -> dict:
    job = {
        "format": 1, "kind": "step2_trial", "study": "scorer_meta_opt_1", "run_id": "r1", "trial_id": "trial_0003",
        "attempt": 1, "timeout_s": 60, "code_hash": HASH, "prng": {"type": "java_lcg", "mod": 1000},
        "sample_size": 450,
        "data": {role: {"path": f"data/{role}.json", "sha256": HASH} for role in contract.DATA_ROLES},
        "params": {"optuna_trial_number": 3},
        "evaluation": {"replicates": 2, "eval_size": 450, "nulls": 100, "objective": "spearman_rho"},
    }
    job.update(changes)
    return job


def test_a_valid_job_round_trips():
    job = contract.parse_job(job_dict())
    assert job.trial_number == 3 and job.result_path == "results/scorer_meta_opt_1/r1/trial_0003.a1.json"
    assert job.path == "jobs/scorer_meta_opt_1/r1/trial_0003.a1.json"
    assert contract.parse_job(job.to_dict()) == job


@pytest.mark.parametrize("change, field", [
    ({"params": {}}, "params.optuna_trial_number"),
    ({"params": {"optuna_trial_number": "3"}}, "params.optuna_trial_number"),
    ({"trial_id": "trial_0004"}, "trial_id"),
    ({"attempt": 0}, "attempt"),
    ({"attempt": True}, "attempt"),
    ({"timeout_s": float("inf")}, "timeout_s"),
    ({"code_hash": "abc"}, "code_hash"),
    ({"prng": {"type": "java_lcg", "mod": 1}}, "prng.mod"),
    ({"prng": {"mod": 1000}}, "prng.type"),
    ({"sample_size": 1}, "sample_size"),
    ({"evaluation": {"replicates": 0, "eval_size": 450, "nulls": 1, "objective": "spearman_rho"}},
     "evaluation.replicates"),
    ({"evaluation": {"replicates": 1, "eval_size": 449, "nulls": 1, "objective": "spearman_rho"}},
     "evaluation.eval_size"),
    ({"evaluation": {"replicates": 1, "eval_size": 450, "nulls": 1, "objective": "mse"}}, "evaluation.objective"),
    ({"kind": "step2_confirm"}, "trial_id"),  # a confirmation is confirm_NNNN
    ({"format": 2}, "format"),
    ({"kind": "other"}, "kind"),
    ({"study": "../etc"}, "study"),
    ({"run_id": "$(touch pwned)"}, "run_id"),
    ({"run_id": "r1;rm -rf /"}, "run_id"),
    ({"study": "`id`"}, "study"),
])
def test_each_bad_field_is_named(change: dict, field: str):
    with pytest.raises(contract.ContractError) as err:
        contract.parse_job(job_dict(**change), "job.json")
    assert err.value.field == field and str(err.value).startswith("job.json: field")


@pytest.mark.parametrize("path", ["../secret", "/etc/passwd", "data/../../x", "data/./x", "data/$(touch pwned)",
                                  "data/a b", "", "data//x"])
def test_data_paths_must_stay_inside_the_workdir(path: str):
    job = job_dict()
    job["data"]["survivors"]["path"] = path
    with pytest.raises(contract.ContractError, match="data.survivors.path"):
        contract.parse_job(job)


def test_symlinks_cannot_lead_out_of_the_workdir(tmp_path: Path):
    (tmp_path / "root").mkdir()
    os.symlink("/etc", tmp_path / "root" / "data")
    with pytest.raises(contract.ContractError, match="outside the work directory"):
        contract.resolve_inside(tmp_path / "root", "data/passwd")


def result(**changes) -> dict:
    job = contract.parse_job(job_dict())
    record = contract.make_result(job.identity(), accuracy=0.25, error=None)
    record.update(changes)
    return record


def test_results_are_checked_against_run_trial_and_attempt():
    ok = result()
    job = contract.parse_job(job_dict())
    assert contract.validate_result(ok, "r.json", job) is ok
    for field, value in (("run_id", "r0"), ("trial_id", "trial_0004"), ("attempt", 2)):
        with pytest.raises(contract.ContractError, match="stale or foreign"):
            contract.validate_result(result(**{field: value}), "r.json", job)


@pytest.mark.parametrize("changes", [
    {"status": "error", "error": "boom"},  # an error carrying a number
    {"accuracy": float("-inf")},
    {"accuracy": None},
    {"accuracy": 2.0},
    {"status": "done"},
])
def test_a_crash_can_never_pass_for_a_value(changes: dict):
    with pytest.raises(contract.ContractError):
        contract.validate_result(result(**changes), "r.json", contract.parse_job(job_dict()))


def test_error_results_carry_no_accuracy():
    job = contract.parse_job(job_dict())
    record = contract.make_result(job.identity(), accuracy=0.9, error="boom")
    assert record["status"] == "error" and record["accuracy"] is None
    with pytest.raises(ValueError):
        contract.make_result(job.identity(), accuracy=float("nan"), error=None)


def test_partial_identity_only_from_sound_fields():
    bad = job_dict(params={})
    assert contract.partial_identity(bad)["trial_id"] == "trial_0003"
    assert contract.partial_identity(job_dict(run_id="../x")) is None
    assert contract.partial_identity([]) is None


def test_atomic_write_leaves_old_file_or_whole_new_one(tmp_path: Path):
    path = tmp_path / "a" / "r.json"
    files.write_json_atomic(path, {"x": 1})
    with pytest.raises(ValueError):
        files.write_json_atomic(path, {"x": float("nan")})  # not JSON: nothing half-written
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_code_hash_changes_with_any_worker_file(tmp_path: Path):
    package = Path(contract.__file__).parent
    copy_dir = tmp_path / "worker"
    copy_dir.mkdir()
    for f in contract.code_files(package):
        (copy_dir / f.relative_to(package)).parent.mkdir(parents=True, exist_ok=True)
        (copy_dir / f.relative_to(package)).write_bytes(f.read_bytes())
    assert contract.code_hash(copy_dir) == contract.code_hash(package)
    (copy_dir / "params.py").write_text((copy_dir / "params.py").read_text() + "\n# changed\n")
    assert contract.code_hash(copy_dir) != contract.code_hash(package)


def test_read_json_names_the_file(tmp_path: Path):
    bad = tmp_path / "job.json"
    bad.write_text("{")
    with pytest.raises(contract.ContractError, match="job.json: not valid JSON"):
        contract.read_json(bad)
    with pytest.raises(contract.ContractError, match="cannot read"):
        contract.read_json(tmp_path / "missing.json")


def test_a_confirmation_is_seeded_apart_from_every_trial():
    job = contract.parse_job(job_dict(kind="step2_confirm", trial_id="confirm_0003"))
    trial = contract.parse_job(job_dict())
    assert job.kind == "step2_confirm" and job.result_path == "results/scorer_meta_opt_1/r1/confirm_0003.a1.json"
    assert job.payload.seed != trial.payload.seed and trial.payload.seed == [3]
    assert {job.payload.net_seed(k) for k in range(3)}.isdisjoint({trial.payload.net_seed(k) for k in range(3)})
    assert contract.parse_job(job.to_dict()) == job


def test_a_value_outside_the_objectives_range_is_refused():
    job = contract.parse_job(job_dict(evaluation={"replicates": 1, "eval_size": 450, "nulls": 0,
                                                  "objective": "top_lift"}))
    record = contract.make_result(job.identity(), accuracy=5.0, error=None)
    assert contract.validate_result(record, "r.json", job) is record  # a lift of 5 is a top_lift value
    with pytest.raises(contract.ContractError, match="outside the top_lift range"):
        contract.validate_result({**record, "accuracy": -1.5}, "r.json", job)
