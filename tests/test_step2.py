"""`coordinator step2` end to end on the local head: the proposal's acceptance criteria 1, 2, 4
and 6 on a 10-trial run, and resume after the coordinator is SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.study import Study, StudyError, storage_path
from worker.demo import write_uniform

REPO = Path(__file__).resolve().parent.parent
VENV_PY = str(Path(sys.executable))
EVALUATION = ("--replicates", "2", "--eval-size", "400", "--nulls", "100", "--confirm-top", "3",
              "--confirm-replicates", "2")  # the small demo's pool holds ~900


@pytest.fixture(scope="module")
def planted(small_demo: Path) -> Path:
    """The small sieve-made demo: Step 1's output folder as it is."""
    return small_demo


def head_inventory(where: Path, slots: int = 2) -> Path:
    rigs = where / "rigs.toml"
    rigs.write_text(f'[[rig]]\nname = "head"\nlocal = true\npython = "{VENV_PY}"\nworkdir = ".rigs/head"\n'
                    f"slots = {slots}\n")
    return rigs


def coordinator(cwd: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([VENV_PY, "-m", "coordinator.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


@pytest.mark.slow
def test_ten_trials_meet_the_acceptance_criteria(tmp_path: Path, planted: Path):
    head_inventory(tmp_path)
    proc = coordinator(tmp_path, "step2", "--data", str(planted), "--mod", "1000", "--trials", "10",
                       "--sample-size", "200", *EVALUATION, "--study", "s10", "--no-tui")
    out = finish(proc)
    assert proc.returncode == 0, out
    trials = tmp_path / "runs" / "s10" / "trials"
    finals = {p.stem: json.loads(p.read_text()) for p in trials.glob("trial_????.json")}
    assert len(finals) == 10 and all(r["status"] == "success" for r in finals.values())   # criterion 6
    accuracies = {r["accuracy"] for r in finals.values()}
    assert len(accuracies) > 1                                                            # criterion 1
    config = json.loads((tmp_path / "optimal_scorer_config.json").read_text())
    assert config["accuracy"] > 0                                                         # criterion 2
    confirmation = config["_run_context"]["confirmation"]  # the optimum: the best confirmed on fresh samples
    assert config["accuracy"] == confirmation["value"] and confirmation["search_best"]["value"] == max(accuracies)
    lo, hi = confirmation["interval_95"]
    assert lo < config["accuracy"] < hi and confirmation["replicates"] == 2
    assert finals["trial_0000"]["sample_indices"] != finals["trial_0001"]["sample_indices"]  # criterion 4
    best = config["_run_context"]["trial_number"]
    assert {k: config[k] for k in finals[f"trial_{best:04d}"]["params"] if k != "optuna_trial_number"} == {
        k: v for k, v in finals[f"trial_{best:04d}"]["params"].items() if k != "optuna_trial_number"}
    ctx = config["_run_context"]
    assert ctx["complete"] == 10 and ctx["failed"] == 0 and ctx["study"] == "s10"
    assert ctx["survivor_coverage"]["unique_seen"] > 200
    study = Study("s10", tmp_path / storage_path("s10"), seed=0, create=False, writer=False)
    assert sorted(t.value for t in study.trials()) == sorted(r["accuracy"] for r in finals.values())
    assert (tmp_path / "jobs" / "s10" / ctx["run_id"] / "trial_0009.a1.json").is_file()  # every attempt's job


@pytest.mark.slow
def test_resume_after_sigkill_completes_without_rerunning(tmp_path: Path, planted: Path):
    head_inventory(tmp_path)
    proc = coordinator(tmp_path, "step2", "--data", str(planted), "--mod", "1000", "--trials", "12",
                       "--sample-size", "200", *EVALUATION, "--study", "sk", "--no-tui", start_new_session=True)
    trials = tmp_path / "runs" / "sk" / "trials"
    journal = tmp_path / storage_path("sk")

    def mid_trial() -> bool:
        """At least 3 trials archived and one dispatched to a slot, still running."""
        if len(list(trials.glob("trial_????.json"))) < 3:
            return False
        reader = Study("sk", journal, seed=0, create=False, writer=False)
        return any(t.state == "RUNNING" and "dispatch" in t.attrs for t in reader.trials())

    deadline = time.monotonic() + 180
    while not mid_trial():
        assert proc.poll() is None and time.monotonic() < deadline, "coordinator ended before the kill"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its local warm workers, as a crash would
    proc.wait()
    before = {p.name: p.read_text() for p in trials.glob("trial_????.json")}
    study = Study("sk", tmp_path / storage_path("sk"), seed=0, create=False, writer=False)
    done_before = {t.number: t.value for t in study.trials() if t.state == "COMPLETE"}
    assert 2 <= len(done_before) < 12  # an archived trial may not have been told yet
    # the attempt that was running yields nothing, and must be on record as such
    interrupted = {t.number: t.attrs["dispatch"]["attempt"] for t in study.trials()
                   if t.state == "RUNNING" and "dispatch" in t.attrs}
    assert interrupted

    proc = coordinator(tmp_path, "step2", "--resume", "sk", "--no-tui")
    out = finish(proc)
    assert proc.returncode == 0, out
    study = Study("sk", tmp_path / storage_path("sk"), seed=0, create=False, writer=False)
    states = [t.state for t in study.trials()]
    assert states.count("COMPLETE") == 12 and "RUNNING" not in states and "FAIL" not in states
    for number, value in done_before.items():   # finished trials kept, not run again
        assert study.trials()[number].value == value
        assert (trials / f"trial_{number:04d}.json").read_text() == before[f"trial_{number:04d}.json"]
    assert len(list(trials.glob("trial_????.json"))) == 12
    runs = study.meta()["runs"]
    assert len(runs) == 2
    assert all(t.attrs["run_id"] == runs[0] for t in study.trials() if t.number in done_before)
    for number, attempt in interrupted.items():  # collected if its result was written before the kill, else rerun
        record = json.loads((trials / f"trial_{number:04d}.a{attempt}.json").read_text())
        trial = study.trials()[number]
        assert record["run_id"] == runs[0]
        if record["status"] == "success":
            assert trial.attrs["reattached"] and trial.value == record["accuracy"]
            continue
        assert "interrupted" in record["error"]
        assert trial.attrs["attempts"] == attempt + 1 and trial.attrs["failures"][0]["reason"] == "interrupted"


@pytest.mark.parametrize("args, says", [
    (("--trials", "0"), "--trials must be at least 1, got 0"),
    (("--trials", "-3"), "--trials must be at least 1, got -3"),
    (("--sample-size", "0"), "--sample-size must be at least 2, got 0"),
    (("--trial-timeout", "0"), "--trial-timeout must be a positive number of seconds, got 0"),
    (("--attempts", "0"), "--attempts must be at least 1, got 0"),
    (("--quarantine-after", "0"), "--quarantine-after must be at least 1, got 0"),
    (("--seed", "-1"), "--seed must be in 0..4294967295, got -1"),
    (("--mod", "1"), "--mod must be at least 2, got 1"),
    (("--prng", "xorshift9"), "--prng: unknown PRNG type 'xorshift9'"),
    (("--study", "my study"), "--study 'my study': a study name is 1-128 letters"),
    (("--output", "nowhere/config.json"), "--output nowhere/config.json: no folder nowhere"),
    (("--resume", "s"), "--resume s: no study at optuna_studies/s.journal (studies there: none)"),
    (("--sample-size", "5000"), "bidirectional_survivors_binary.npz: field 'seeds': sample_size 5000 is larger"
                                " than the pool of 911"),
    (("--eval-size", "100"), "--eval-size 100 is below the sample size 450"),
    (("--replicates", "0"), "--replicates must be at least 1, got 0"),
], ids=lambda v: "_".join(v) if isinstance(v, tuple) else None)
def test_a_bad_option_is_refused_before_anything_is_created(tmp_path: Path, planted: Path, args, says):
    """One error naming the option, exit 2, and nothing made: no journal, no runs/ or jobs/, no rig's
    workdir (so no slot was warmed), the study's name still free."""
    head_inventory(tmp_path)
    proc = coordinator(tmp_path, "step2", "--data", str(planted), "--mod", "1000", "--study", "s", "--no-tui", *args)
    out = finish(proc, timeout=60)
    assert proc.returncode == 2, out
    (error,) = [line for line in out.splitlines() if line.startswith("coordinator step2: ")]
    assert says in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rigs.toml"]


@pytest.mark.slow
def test_resume_keeps_result_settings_and_extends_the_study(tmp_path: Path, planted: Path):
    """A resume that changes a setting that changes results is refused, naming it; --trials N extends the
    study; the optimum the first run wrote is kept beside the one the resume writes."""
    head_inventory(tmp_path, slots=1)
    first = coordinator(tmp_path, "step2", "--data", str(planted), "--mod", "1000", "--trials", "3", "--sample-size",
                        "200", *EVALUATION, "--seed", "4", "--study", "s", "--no-tui")
    assert finish(first).endswith(f"optimal config: {Path('optimal_scorer_config.json')}\n")
    config = tmp_path / "optimal_scorer_config.json"
    written = config.read_bytes()
    study = Study("s", tmp_path / storage_path("s"), seed=0, create=False, writer=False)
    runs = study.meta()["runs"]

    for args, says in ((("--sample-size", "300"), "--sample-size gives sample_size 300, the study recorded 200"),
                       (("--seed", "5"), "--seed gives seed 5, the study recorded 4"),
                       (("--mod", "999"), "--mod gives prng.mod 999, the study recorded 1000"),
                       (("--replicates", "3"), "--replicates gives evaluation.replicates 3, the study recorded 2"),
                       (("--trials", "2"), "--trials 2: study s already holds 3 trials")):
        proc = coordinator(tmp_path, "step2", "--resume", "s", "--no-tui", *args)
        out = finish(proc, timeout=60)
        assert proc.returncode == 2 and says in out, out
    other = tmp_path / "other"
    write_uniform(other, n_survivors=3000, n_train=2000, n_holdout=500, seed=4)
    proc = coordinator(tmp_path, "step2", "--resume", "s", "--data", str(other), "--no-tui")
    out = finish(proc, timeout=60)
    assert proc.returncode == 2 and "--data gives data.survivors.sha256 " in out, out
    assert study.meta()["runs"] == runs  # none of these began a run

    proc = coordinator(tmp_path, "step2", "--resume", "s", "--trials", "5", "--sample-size", "200", "--no-tui")
    out = finish(proc)
    assert proc.returncode == 0, out
    assert [t.state for t in study.trials()] == ["COMPLETE"] * 5 and study.meta()["trials"] == 5
    kept = next(tmp_path.glob("optimal_scorer_config.2*.json"))
    assert kept.read_bytes() == written and json.loads(config.read_text())["_run_context"]["complete"] == 5
    assert f"optimal config: {Path('optimal_scorer_config.json')} (the previous one is kept as {kept.name})" in out


@pytest.mark.slow
def test_the_confirmation_phase_resumes_after_sigkill(tmp_path: Path, planted: Path):
    """Killed while it confirms the search's best trials, a study resumes into the confirmations still
    missing (collecting one that finished meanwhile), and only then writes its confirmed optimum."""
    head_inventory(tmp_path, slots=1)
    journal = tmp_path / storage_path("sc")
    proc = coordinator(tmp_path, "step2", "--data", str(planted), "--mod", "1000", "--trials", "5",
                       "--sample-size", "200", *EVALUATION, "--study", "sc", "--no-tui", start_new_session=True)

    def confirming() -> bool:
        try:
            state = Study("sc", journal, seed=0, create=False, writer=False).meta().get("confirmations", {})
        except (StudyError, KeyError):  # no journal yet, or not its study's first record
            return False
        return any("dispatch" in s for s in state.values())

    deadline = time.monotonic() + 180
    while not confirming():
        assert proc.poll() is None and time.monotonic() < deadline, "coordinator ended before confirming"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "optimal_scorer_config.json").exists()  # no optimum before its confirmation

    proc = coordinator(tmp_path, "step2", "--resume", "sc", "--no-tui")
    out = finish(proc)
    assert proc.returncode == 0, out
    study = Study("sc", journal, seed=0, create=False, writer=False)
    assert [t.state for t in study.trials()] == ["COMPLETE"] * 5  # the search was not run again
    state = study.meta()["confirmations"]
    top = sorted(study.trials(), key=lambda t: (-t.value, t.number))[:3]
    assert sorted(state) == sorted(str(t.number) for t in top) and all("confirmed" in s for s in state.values())
    config = json.loads((tmp_path / "optimal_scorer_config.json").read_text())
    confirmation = config["_run_context"]["confirmation"]
    best = max(state.values(), key=lambda s: s["confirmed"]["value"])["confirmed"]
    assert config["accuracy"] == confirmation["value"] == best["value"]
    assert confirmation["search_best"]["trial_number"] == top[0].number
    archived = tmp_path / "runs" / "sc" / "trials"
    for number, s in state.items():  # each confirmation archived; an interrupted attempt on record too
        final = json.loads((archived / f"confirm_{int(number):04d}.json").read_text())
        assert final["status"] == "success" and final["accuracy"] == s["confirmed"]["value"]
        for failure in s.get("failures", []):
            assert failure["reason"] == "interrupted"
            assert (archived / f"confirm_{int(number):04d}.a{failure['attempt']}.json").is_file()
