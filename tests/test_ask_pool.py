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
from optuna.trial import TrialState

from coordinator import ask_pool, fast_tpe
from coordinator.ask_pool import Changes
from coordinator.study import STARTUP_TRIALS, Study, distributions, make_sampler, storage_path
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


def served(study: Study) -> list[int]:
    """The pids of the study's ask processes that have delivered a proposal."""
    assert study._pool is not None
    with study._pool._cond:
        return [p.popen.pid for p in study._pool._procs if p.served and p.popen is not None]


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


def tpe_inputs(study: optuna.Study) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """What the study's sampler rests a new trial's proposal on, by Optuna's own split: the trial numbers
    below and above; None while its asks are still random."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    n = sum(t.state != TrialState.RUNNING for t in trials)
    if n < STARTUP_TRIALS:
        return None
    below, above = fast_tpe._optuna_split_trials(study, trials, fast_tpe.gamma(n))
    return tuple(t.number for t in below), tuple(t.number for t in above)


def test_a_proposal_that_missed_nothing_is_the_one_the_sampler_makes_now():
    """Against Optuna's own split, over asks, results (ties among them) and failures. A proposal made
    `back` changes ago that missed nothing rests on the same trials as one made now, and is the very
    proposal the sampler makes now (same seed, same draw). Where only results came since, it missed
    nothing exactly when the split is the same: a result that leaves the split alone never counts. One
    sampler makes every proposal: each draw is seeded by the trials it saw, not by the asks before it."""
    study, dists, rng = optuna.create_study(direction="maximize"), distributions(), np.random.default_rng(4)
    sampler = make_sampler(0)
    changes = Changes([], STARTUP_TRIALS, fast_tpe.gamma)
    running: list[optuna.Trial] = []
    states, proposals, kinds, reused = [], [], [], 0
    for step in range(260):
        if len(running) < rng.integers(1, 6):
            running.append(study.ask(dists))
            changes.asked()
            kinds.append("ask")
        else:
            trial = running.pop(int(rng.integers(len(running))))
            if rng.random() < 0.1:
                study.tell(trial, state=TrialState.FAIL)
                changes.told(trial.number, None)
                kinds.append("fail")
            else:
                value = float(rng.choice([0.1, 0.2, 0.3]) if rng.random() < 0.3 else rng.uniform(-0.2, 0.5))
                study.tell(trial, value)
                changes.told(trial.number, value)
                kinds.append("result")
        assert changes.count == ask_pool.changes(study.get_trials(deepcopy=False))
        states.append((changes.count, tpe_inputs(study)))
        proposals.append(ask_pool.propose(study._storage, study.study_name, sampler, dists, 9, 0).params)
        for back in range(1, min(step, 8) + 1):
            seen, inputs = states[-1 - back]
            if inputs is None:
                continue
            same = inputs == states[-1][1]
            if changes.missed(seen) == 0:
                assert same and proposals[-1 - back] == proposals[-1]
                reused += 1
            elif set(kinds[-back:]) == {"result"}:
                assert not same
    assert reused > 100


def test_tpe_begins_with_the_startup_trials_result():
    changes = Changes([], STARTUP_TRIALS, fast_tpe.gamma)
    for number in range(STARTUP_TRIALS):
        assert changes.tpe_from is None
        changes.asked()
        changes.told(number, None if number == 3 else 0.1)  # a failure is not a result
    assert changes.tpe_from is None
    changes.asked()
    changes.told(STARTUP_TRIALS, 0.2)
    assert changes.tpe_from == changes.count == 2 * (STARTUP_TRIALS + 1)


def test_with_one_trial_at_a_time_a_proposal_is_used_only_if_it_missed_nothing(tmp_path: Path):
    """The ask process computes the next trial's parameters while a trial runs; a result that changes
    the best trials makes it compute them again, so every one used is what the head would have asked."""
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        until(lambda: ask_and_tell(study, 4, in_flight=1) and study.asks["ask_processes"] >= 20)
        assert study.asks["missed"] == 0 and study.asks["head"] >= 1
    finally:
        study.close()


def planted(params: dict) -> float:
    """A result that only some parameters move, with ties."""
    return round(params["residue_mod_1"] / 20 - abs(params["temporal_window_size"] - 150) / 300, 2)


def test_a_seeded_study_run_one_trial_at_a_time_proposes_the_same_trials_wherever_they_are_asked(tmp_path: Path):
    """The same seed gives the same trials with or without ask processes, however the asks are timed:
    a proposal that missed nothing is drawn as the head would draw it."""
    runs = {}
    for processes, pause in ((0, 0.0), (2, 0.03)):
        study = Study("s", storage_path("s", tmp_path / str(processes)), seed=5, create=True,
                      ask_processes=processes)
        try:
            for _ in range(60):
                number, params = study.ask()
                time.sleep(pause)  # the trial runs; an ask process computes the next trial's parameters
                study.tell_value(number, planted(params))
            runs[processes] = [t.params for t in study.study.get_trials()], dict(study.asks)
        finally:
            study.close()
    assert runs[2][0] == runs[0][0]
    assert runs[0][1]["ask_processes"] == 0 and runs[2][1]["ask_processes"] >= 10 and runs[2][1]["missed"] == 0


def test_no_two_trials_are_made_from_one_draw(tmp_path: Path):
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= 1)
        pool = study._pool
        assert pool is not None
        fresh = ask_pool.Proposal({}, study._changes.count, (10_000, 1))
        assert pool.usable(fresh)
        pool.drawn(fresh.draw)
        assert not pool.usable(fresh) and not pool.usable(ask_pool.Proposal({}, fresh.seen, (10_000, 1)))
        assert pool.usable(ask_pool.Proposal({}, fresh.seen, (10_000, 2)))
        # one made before the startup trials were done (here: before the study loaded) is a random draw
        assert not pool.usable(ask_pool.Proposal({}, study._changes.tpe_from - 1, (10_000, 3)))
    finally:
        study.close()


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
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no draw used twice
    assert [t.number for t in trials] == list(range(len(trials)))


def test_a_killed_ask_process_is_started_again_and_costs_no_trial(tmp_path: Path):
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= 3 and served(study))
        victim = served(study)[0]  # one that never served is not started again: it may crash at start
        os.kill(victim, signal.SIGKILL)
        until(lambda: not alive(victim))
        before = study.asks["ask_processes"]
        numbers = ask_and_tell(study, 5)
        until(lambda: len(ask_processes(os.getpid())) == 2 and victim not in ask_processes(os.getpid()))
        until(lambda: ask_and_tell(study, 2) and study.asks["ask_processes"] >= before + 8)
    finally:
        study.close()
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_the_pipes_of_an_ask_process_that_died_with_a_request_unsent_close_cleanly():
    """A request written as the process died stays buffered (the write failed); closing the pipe flushes it
    again. The pool's thread closes them when it sees the death, and must live on to start the next one."""
    popen = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    popen.wait()
    assert popen.stdin is not None and popen.stdout is not None
    popen.stdin.write(b"propose 0\n")
    with pytest.raises(BrokenPipeError):
        popen.stdin.flush()
    ask_pool._close_pipes(popen)
    assert popen.stdin.closed and popen.stdout.closed


def test_ask_processes_run_in_process_groups_of_their_own(tmp_path: Path):
    """Out of reach of the terminal's Ctrl-C (the coordinator stops on it, and closes them), in the
    coordinator's session (scheduled with it)."""
    study = Study("s", preloaded(tmp_path), seed=0, create=False)
    try:
        until(lambda: ask_and_tell(study, 2) and len(ask_processes(os.getpid())) == 2)
        pids = ask_processes(os.getpid())
        assert all(os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(0) for pid in pids)
        assert os.getpgid(0) not in pids
    finally:
        study.close()


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
