"""The Optuna boundary: explicit TPE settings, one coordinator per study, trials left half-asked by
a killed coordinator completed on resume, crashes told as FAIL with their reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from coordinator.study import Study, StudyError, distributions, make_sampler, storage_path
from worker.params import SEARCH_SPACE, validate_params


def test_sampler_settings_are_explicit():
    sampler = make_sampler(7)
    assert sampler._constant_liar is True and sampler._multivariate is True
    assert set(distributions()) == set(SEARCH_SPACE)


def test_asked_params_are_valid_worker_params(tmp_path: Path):
    study = Study("s", storage_path("s", tmp_path), seed=1, create=True)
    for _ in range(12):
        number, params = study.ask()
        validate_params({**params, "optuna_trial_number": number})
        study.tell_value(number, 0.1)


def test_a_trial_is_asked_with_its_parameters_and_first_attributes_in_one_journal_line(tmp_path: Path):
    path = storage_path("s", tmp_path)
    study = Study("s", path, seed=1, create=True, ask_processes=0)
    lines = len(path.read_text().splitlines())
    number, params = study.ask(run_id="r1")
    study.sync()
    added = [json.loads(line) for line in path.read_text().splitlines()[lines:]]
    assert len(added) == 1 and added[0]["user_attrs"] == {"run_id": "r1"} and set(added[0]["params"]) == set(params)
    assert study.trials()[number].attrs == {"run_id": "r1"}


def test_one_coordinator_per_study(tmp_path: Path):
    path = storage_path("s", tmp_path)
    first = Study("s", path, seed=0, create=True)
    with pytest.raises(StudyError, match=f"in use by another coordinator \\(pid {os.getpid()} on "):
        Study("s", path, seed=0, create=False)
    reader = Study("s", path, seed=0, create=False, writer=False)
    assert reader.trials() == [] and first.trials() == []
    number, _ = first.ask()
    first.tell_value(number, 0.25)
    assert [(t.state, t.value) for t in reader.trials()] == [("COMPLETE", 0.25)]  # a reader follows the writer
    with pytest.raises(StudyError, match="read-only here"):
        reader.set_meta("x", 1)  # only the owner writes
    with pytest.raises(StudyError, match="already stored"):
        Study("s", path, seed=0, create=True, writer=False)


def test_the_lock_refusal_names_the_process_that_holds_it(tmp_path: Path):
    path = storage_path("s", tmp_path)
    Study("s", path, seed=0, create=True)  # then dropped: its lock with it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path;"
                               " from coordinator.study import Study;"
                               " s = Study('s', Path(sys.argv[1]), seed=0, create=False); print('held', flush=True);"
                               " time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StudyError, match=f"in use by another coordinator \\(pid {holder.pid} on .*, since "):
            Study("s", path, seed=0, create=False)
    finally:
        holder.kill()
        holder.wait()
    Study("s", path, seed=0, create=False)  # free again once its holder is gone


def test_the_owner_appends_without_lock_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The owner flock is the journal's lock; a lock file per append would cost two syscalls and a race
    with a killed coordinator's leftover."""
    study = Study("s", storage_path("s", tmp_path), seed=0, create=True)
    made: list[str] = []
    real_symlink = os.symlink

    def symlink(src: str, dst: str, *args: object) -> None:  # optuna's default journal lock is a symlink
        made.append(dst)
        real_symlink(src, dst, *args)

    monkeypatch.setattr(os, "symlink", symlink)
    number, _ = study.ask()
    study.set_attrs(number, rig="a")
    study.tell_value(number, 0.5)
    assert made == [] and sorted(p.name for p in tmp_path.iterdir()) == ["s.journal", "s.journal.owner"]


def test_the_journal_is_synced_at_tells_and_on_request_not_per_line(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    study = Study("s", storage_path("s", tmp_path), seed=0, create=True)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    number, _ = study.ask()  # a dozen journal lines
    study.set_attrs(number, rig="a")
    assert synced == []
    study.sync()  # as before a job leaves the head
    study.tell_value(number, 0.5)
    assert len(synced) == 2
    reader = Study("s", storage_path("s", tmp_path), seed=0, create=False, writer=False)
    assert [(t.state, t.value, t.attrs) for t in reader.trials()] == [("COMPLETE", 0.5, {"rig": "a"})]


def test_half_asked_trial_is_completed_on_resume(tmp_path: Path):
    path = storage_path("s", tmp_path)
    study = Study("s", path, seed=0, create=True)
    trial = study.study.ask()  # as if killed inside ask(): one parameter stored, the rest not
    first = trial.suggest_int("residue_mod_1", 5, 20)
    del study
    resumed = Study("s", path, seed=0, create=False)
    params = resumed.complete_params(trial.number)
    assert params["residue_mod_1"] == first and set(params) == set(SEARCH_SPACE)
    validate_params({**params, "optuna_trial_number": trial.number})
    assert resumed.complete_params(trial.number) == params


def test_failures_are_fail_with_reason_never_values(tmp_path: Path):
    study = Study("s", storage_path("s", tmp_path), seed=0, create=True)
    number, _ = study.ask()
    study.tell_fail(number, "attempt 1 on rig-a: exit")
    (record,) = study.trials()
    assert record.state == "FAIL" and record.value is None and record.attrs["fail_reason"].endswith("exit")
    assert study.best() is None


def test_a_half_written_last_line_is_cut_and_the_journal_stays_appendable(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture):
    """A crash in the middle of an append leaves a torn last line; the next append must not join it."""
    path = storage_path("s", tmp_path)
    study = Study("s", path, seed=0, create=True)
    for value in (0.1, 0.2):
        number, _ = study.ask()
        study.tell_value(number, value)
    del study
    torn = b'{"op_code":5,"worker_id":"x","trial_id":1,"sta'
    with open(path, "ab") as f:
        f.write(torn)
    resumed = Study("s", path, seed=0, create=False)
    assert f"half-written last line ({len(torn)} bytes)" in caplog.text
    number, _ = resumed.ask()
    resumed.tell_value(number, 0.3)
    reader = Study("s", path, seed=0, create=False, writer=False)
    assert [(t.state, t.value) for t in reader.trials()] == [("COMPLETE", 0.1), ("COMPLETE", 0.2), ("COMPLETE", 0.3)]


def test_a_journal_that_cannot_be_replayed_is_one_clear_error(tmp_path: Path):
    path = storage_path("s", tmp_path)
    study = Study("s", path, seed=0, create=True)
    study.ask()
    del study
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"not json\n" + b"".join(lines[1:]))
    with pytest.raises(StudyError, match=r"s\.journal: the journal cannot be replayed"):
        Study("s", path, seed=0, create=False)


def test_the_writer_reads_back_what_it_wrote_as_a_replay_would(tmp_path: Path):
    """The owner answers its reads from the lines it appended; Optuna refusing one of them (an attribute
    on a finished trial) must leave it where a replay of the file would be."""
    path = storage_path("s", tmp_path)
    study = Study("s", path, seed=0, create=True)
    first, _ = study.ask()
    study.tell_value(first, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.set_attrs(first, late=True)
    second, _ = study.ask()
    study.set_attrs(second, rig="a")
    study.tell_fail(second, "attempt 1 on a: exit")
    reader = Study("s", path, seed=0, create=False, writer=False)
    assert reader.trials() == study.trials() and len(study.trials()) == 2


def test_syncs_are_outside_the_lock_and_one_fsync_serves_every_append_before_it(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    study = Study("s", storage_path("s", tmp_path), seed=0, create=True)
    held: list[bool] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (held.append(study.lock.locked()), real_fsync(fd))[1])
    number, _ = study.ask()
    study.set_attrs(number, rig="a")
    study.sync()
    study.sync()  # nothing appended since: no second fsync
    study.tell_value(number, 0.5)
    assert held == [False, False]
