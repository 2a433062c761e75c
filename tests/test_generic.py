"""Generic jobs-file mode on the local head: success needs exit 0 AND a valid expected output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from coordinator.events import RunState
from coordinator.script_jobs import load_jobs_file, run_jobs
from worker.contract import ContractError

SCRIPT = """
import json, sys
name, mode = sys.argv[1], sys.argv[2]
if mode == "fail":
    sys.exit(3)
out = {"status": "error", "error": "bad"} if mode == "errjson" else {"accuracy": 0.5, "name": name}
with open(f"out/{name}.json", "w") as fh:
    fh.write("{" if mode == "corrupt" else json.dumps(out))
"""


def setup(tmp_path: Path, jobs: list[dict]) -> tuple[Path, Path]:
    work = tmp_path / "head"
    (work / "out").mkdir(parents=True)
    (work / "job.py").write_text(SCRIPT)
    rigs = tmp_path / "rigs.toml"
    rigs.write_text(f'[[rig]]\nname = "head"\nlocal = true\npython = "{sys.executable}"\nworkdir = "{work}"\n'
                    "slots = 2\n")
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    return rigs, jobs_file


def job(name: str, mode: str) -> dict:
    return {"job_id": name, "script": "job.py", "args": [name, mode], "expected_output": f"out/{name}.json",
            "timeout": 30}


def test_success_needs_exit_zero_and_valid_output(tmp_path: Path):
    rigs, jobs_file = setup(tmp_path, [job("good", "ok"), job("exit", "fail"), job("err", "errjson"),
                                       job("bad", "corrupt")])
    summary, outcomes, _ = run_jobs(rigs, jobs_file, tmp_path / "run", RunState(), max_attempts=2)
    assert summary.complete == 1 and summary.failed == 3
    assert outcomes["good"]["status"] == "success"
    assert json.loads((tmp_path / "run" / "outputs" / "good.json").read_text())["name"] == "good"
    assert "exit 3" in outcomes["exit"]["failures"][0]["detail"]
    assert "status 'error'" in outcomes["err"]["failures"][0]["detail"]
    assert "not valid JSON" in outcomes["bad"]["failures"][0]["detail"]
    assert all(len(outcomes[k]["failures"]) == 2 for k in ("exit", "err", "bad"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["failed"] == 3


def test_shell_metacharacters_in_args_are_data(tmp_path: Path):
    marker = tmp_path / "pwned"
    rigs, jobs_file = setup(tmp_path, [job("x", "ok") | {"args": ["x", f"$(touch {marker})"]},
                                       job("y", "ok") | {"args": ["y", f"`touch {marker}`; touch {marker}"]}])
    summary, _, _ = run_jobs(rigs, jobs_file, tmp_path / "run", RunState())
    assert summary.complete == 2 and not marker.exists()


@pytest.mark.parametrize("change, field", [
    ({"job_id": "../x"}, "jobs[0].job_id"),
    ({"script": "/bin/sh"}, "jobs[0].script"),
    ({"expected_output": "../../etc/passwd"}, "jobs[0].expected_output"),
    ({"timeout": 0}, "jobs[0].timeout"),
    ({"args": [["nested"]]}, "jobs[0].args"),
    ({"extra": 1}, "jobs[0].extra"),
])
def test_bad_jobs_are_refused_before_anything_runs(tmp_path: Path, change: dict, field: str):
    _, jobs_file = setup(tmp_path, [job("a", "ok") | change])
    with pytest.raises(ContractError) as err:
        load_jobs_file(jobs_file)
    assert err.value.field == field
