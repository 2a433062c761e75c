"""Asks made in ask processes: every trial once, whole and fresh enough; the processes restarted when
they die, and gone when the study closes or the coordinator is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from coordinator.study import Study, distributions, storage_path
from worker.params import random_params, validate_params

REPO = Path(__file__).resolve().parent.parent


def preloaded(tmp_path: Path, trials: int = 40) -> Path:
    """A study of `trials` completed trials, written as a plain Optuna writer."""
    path = storage_path("s", tmp_path)
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))),
                                direction="maximize")
    rng = np.random.default_rng(0)
    study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=distributions(),
                                                value=float(rng.uniform(-0.2, 0.5))) for _ in range(trials)])
    return path


def until(condition, timeout: float = 60.0) -> None:  # noqa: ANN001 - a test helper
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ask_processes(parent: int) -> list[int]:
    """The ask processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"coordinator.ask_pool" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ask_and_tell(study: Study, trials: int, in_flight: int = 2) -> list[int]:
    """`trials` asked and told, `in_flight` of them running at once (told oldest first)."""
    numbers, running = [], []
    for _ in range(trials):
        number, params = study.ask()
        validate_params({**params, "optuna_trial_number": number})
        numbers.append(number)
        running.append(number)
        if len(running) >= in_flight:
            oldest = running.pop(0)
            study.tell_value(oldest, (oldest * 0.618034) % 1.0)
    for number in running:
        study.tell_value(number, (number * 0.618034) % 1.0)
    return numbers


def test_one_trial_at_a_time_every_ask_is_the_heads(tmp_path: Path):
    """A proposal would have to see the last result, so the head asks itself: exactly TPE's suggestions."""
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    ask_and_tell(study, 20, in_flight=1)
    assert study.asks == {"ask_processes": 0, "head": 20, "missed": 0} and ask_processes(os.getpid()) == []


def test_with_two_in_flight_a_proposal_misses_at_most_one_change(tmp_path: Path):
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        # the ask processes start at the first ask that finds two trials have run at once
        until(lambda: ask_and_tell(study, 2) and len(ask_processes(os.getpid())) == 2)
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= 8)
        assert study.asks["missed"] <= study.asks["ask_processes"]
    finally:
        study.close()


def test_from_many_slots_each_trial_is_asked_once_and_stored_whole(tmp_path: Path):
    path = preloaded(tmp_path)
    study = Study("s", path, seed=0, create=False)
    numbers: list[int] = []
    threads = [threading.Thread(target=lambda: numbers.extend(ask_and_tell(study, 12))) for _ in range(12)]
    try:
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= 3)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        study.close()
    assert len(numbers) == len(set(numbers)) == 12 * 12 and study.asks["ask_processes"] > 50
    reader = Study("s", path, seed=0, create=False, writer=False)
    trials = reader.trials()
    assert all(t.state == "COMPLETE" and set(t.params) == set(distributions()) for t in trials)
    assert [t.number for t in trials] == list(range(len(trials)))


def test_a_killed_ask_process_is_started_again_and_costs_no_trial(tmp_path: Path):
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= 3)
        victim = ask_processes(os.getpid())[0]
        os.kill(victim, signal.SIGKILL)
        until(lambda: not alive(victim))
        before = study.asks["ask_processes"]
        numbers = ask_and_tell(study, 5)
        until(lambda: len(ask_processes(os.getpid())) == 2 and victim not in ask_processes(os.getpid()))
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= before + 8)
    finally:
        study.close()
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_close_stops_the_ask_processes_and_the_study_asks_on(tmp_path: Path):
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    until(lambda: ask_and_tell(study, 2) and len(ask_processes(os.getpid())) == 2)
    pids = ask_processes(os.getpid())
    study.close()
    study.close()
    assert ask_processes(os.getpid()) == [] and not any(alive(pid) for pid in pids)
    head = study.asks["head"]
    ask_and_tell(study, 4)
    assert study.asks["head"] == head + 4


@pytest.mark.parametrize("how", ["SIGKILL", "exit without close"])
def test_ask_processes_end_with_the_coordinator(tmp_path: Path, how: str):
    path = preloaded(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from coordinator.study import Study
        study = Study("s", Path({str(path)!r}), seed=0, create=False)
        running = [study.ask()[0]]
        while study.asks["ask_processes"] < 2:  # two in flight
            running.append(study.ask()[0])
            study.tell_value(running.pop(0), 0.5)
        print("serving", flush=True)
        sys.stdin.readline()  # then exits, the study still open
    """)
    coordinator = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    try:
        assert coordinator.stdin is not None and coordinator.stdout is not None
        assert coordinator.stdout.readline() == "serving\n"
        pids = ask_processes(coordinator.pid)
        assert len(pids) == 2
        if how == "SIGKILL":
            coordinator.kill()
        else:
            coordinator.stdin.write("\n")
            coordinator.stdin.flush()
        coordinator.wait(30)
        until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    finally:
        coordinator.kill()
        coordinator.wait()
