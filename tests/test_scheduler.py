"""The scheduler's policy with fake slots: retries on the head, FAIL after the last attempt,
quarantine, and outcomes reported as they arrive (no batches)."""

from __future__ import annotations

import threading
import time

import pytest

from coordinator.events import RunState
from coordinator.inventory import Rig
from coordinator.scheduler import Outcome, Scheduler, Task

HEAD = Rig(name="head", python="py", workdir="w", slots=1, local=True)
RIG_A = Rig(name="a", python="py", workdir="w", slots=2, host="h", user="u")


class ListSource:
    def __init__(self, n: int):
        self.left = list(range(n))
        self.told: dict[str, tuple] = {}
        self.attempts: list[tuple[str, int, str | None]] = []
        self.order: list[str] = []  # asks and tells, in order
        self.lock = threading.Lock()

    def next_task(self):
        with self.lock:
            if not self.left:
                return None
            n = self.left.pop(0)
            self.order.append(f"ask{n}")
            return Task(f"t{n}", n)

    def succeeded(self, task, outcome, rig):
        with self.lock:
            assert task.key not in self.told, "told twice"
            self.told[task.key] = ("ok", outcome.value, rig.name, task.attempt)
            self.order.append(f"tell{task.payload}")

    def attempt_failed(self, task, outcome, rig, final):
        with self.lock:
            self.attempts.append((task.key, task.attempt, rig.name if rig else None))
            if final:
                assert task.key not in self.told, "told twice"
                self.told[task.key] = ("fail", [f.to_dict() for f in task.failures])


class FakeSlot:
    def __init__(self, rig: Rig, index: int, behave):
        self.rig, self.index, self.behave = rig, index, behave
        self.cancelled = threading.Event()
        self.ran: list[tuple[str, int]] = []

    def start(self):
        if self.behave == "nostart":
            raise RuntimeError("connection refused")
        if self.behave == "slowstart":
            time.sleep(0.3)

    def execute(self, task):
        self.ran.append((task.key, task.attempt))
        if self.behave == "crash":
            return Outcome(False, reason="exit", detail="exit 1")
        if self.behave == "hang":
            self.cancelled.wait(5)
            return Outcome(False, reason="cancelled")
        time.sleep(0.001)
        return Outcome(True, value=float(task.payload))

    def cancel(self):
        self.cancelled.set()

    def close(self):
        pass


def run(source, slots, **kw):
    state = RunState()
    summary = Scheduler(source, slots, state, **kw).run()
    return summary, state


def test_every_task_told_once_and_ask_follows_tell():
    source = ListSource(20)
    summary, state = run(source, [FakeSlot(HEAD, 0, "ok")])
    assert summary.complete == 20 and summary.failed == 0
    assert set(source.told) == {f"t{i}" for i in range(20)}
    # one slot: each result is told before the next trial is asked (in-loop, not pre-sampled)
    assert source.order[:4] == ["ask0", "tell0", "ask1", "tell1"]
    assert state.best == (19.0, "t19")


def test_failed_attempts_are_retried_on_the_head_with_the_same_task():
    source = ListSource(6)
    head, bad = FakeSlot(HEAD, 0, "ok"), FakeSlot(RIG_A, 0, "crash")
    summary, _ = run(source, [head, bad], quarantine_after=100)
    assert summary.failed == 0 and summary.complete == 6
    retried = {key for key, attempt in head.ran if attempt == 2}
    assert retried == {key for key, _ in bad.ran}
    for key in retried:
        assert source.told[key][2:] == ("head", 2)


def test_crashes_end_fail_with_every_reason_never_a_value():
    source = ListSource(3)
    summary, state = run(source, [FakeSlot(HEAD, 0, "crash")], max_attempts=3)
    assert summary.failed == 3 and summary.complete == 0 and state.best is None
    for key in ("t0", "t1", "t2"):
        status, failures = source.told[key]
        assert status == "fail" and [f["attempt"] for f in failures] == [1, 2, 3]
        assert all(f["reason"] == "exit" and f["detail"] == "exit 1" and f["rig"] == "head" for f in failures)


def test_a_failing_rig_is_quarantined_and_its_running_attempts_come_back():
    source = ListSource(12)
    head = FakeSlot(HEAD, 0, "ok")
    crash, hang = FakeSlot(RIG_A, 0, "crash"), FakeSlot(RIG_A, 1, "hang")
    summary, state = run(source, [head, crash, hang], quarantine_after=2)
    assert "a" in summary.quarantined and "a" in state.quarantined
    assert hang.cancelled.is_set()
    assert summary.complete == 12 and summary.failed == 0
    assert len(crash.ran) == 2  # nothing more went to the rig once it was out


def test_a_rig_that_cannot_start_loses_no_task():
    source = ListSource(5)
    summary, _ = run(source, [FakeSlot(HEAD, 0, "ok"), FakeSlot(RIG_A, 0, "nostart"), FakeSlot(RIG_A, 1, "nostart")])
    assert summary.complete == 5 and summary.lost_slots == 2
    assert summary.rigs_out == {"a": "no slot started, the last: connection refused"}  # the rig is out, and why


def test_a_retry_waits_for_a_head_slot_still_starting():
    source = ListSource(3)
    head, bad = FakeSlot(HEAD, 0, "slowstart"), FakeSlot(RIG_A, 0, "crash")
    summary, _ = run(source, [head, bad], quarantine_after=100)
    assert summary.complete == 3 and summary.failed == 0
    assert bad.ran == [("t0", 1), ("t1", 1), ("t2", 1)]  # new trials only: every retry went to the head
    assert sorted(head.ran) == [("t0", 2), ("t1", 2), ("t2", 2)]


def test_no_slot_left_leaves_the_waiting_retry_for_resume_and_asks_no_more():
    source = ListSource(2)
    summary, _ = run(source, [FakeSlot(RIG_A, 0, "crash")], quarantine_after=1, max_attempts=2)
    assert summary.complete == 0 and summary.failed == 0 and summary.unfinished == 1
    assert "t0" not in source.told and source.attempts == [("t0", 1, "a")]  # recorded, not told: resumable
    assert summary.stopped == "no slot left to run 1 waiting tasks"
    assert source.left == [1]  # never asked, so never left RUNNING in the study


def test_a_refused_attempt_stops_dispatch_and_fails_no_trial():
    """One refusal (the worker says no attempt can succeed) stops new work at once; the attempt running
    elsewhere finishes and is told; the refused trial is recorded, never told, so a resume runs it."""

    class RefuseFirst(FakeSlot):
        def execute(self, task):
            self.ran.append((task.key, task.attempt))
            started.wait(5)
            return Outcome(False, reason="refused", detail="data/x: file hashes to 1, the job expects 2")

    class SlowOk(FakeSlot):
        def execute(self, task):
            started.set()
            wait_for(lambda: "t" in state.stopping)
            return super().execute(task)

    started = threading.Event()
    source, state = ListSource(10), RunState()
    summary = Scheduler(source, [SlowOk(HEAD, 0, "ok"), RefuseFirst(RIG_A, 0, "ok")], state).run()
    refused = next(key for key, _, rig in source.attempts if rig == "a")
    assert summary.complete == 1 and summary.failed == 0 and summary.unfinished == 1 and summary.retried == 0
    assert refused not in source.told and len(source.told) == 1  # the other trial finished and was told
    assert summary.stopped.startswith(f"{refused} attempt 1 on a: refused: data/x: file hashes to 1")
    assert len(source.left) == 8  # nothing more was asked
    assert state.unfinished == 1 and state.stopping == summary.stopped


def test_a_stop_request_cancels_running_attempts_and_leaves_them_unfinished():
    source = ListSource(10)
    slots = [FakeSlot(HEAD, 0, "hang"), FakeSlot(RIG_A, 0, "hang"), FakeSlot(RIG_A, 1, "hang")]
    state = RunState()
    scheduler = Scheduler(source, slots, state,
                          stop_requested=lambda: "interrupted by SIGINT" if len(source.order) == 3 else None)
    summary = scheduler.run()
    assert all(slot.cancelled.is_set() for slot in slots)
    assert summary.stopped == "interrupted by SIGINT" and summary.unfinished == 3
    assert summary.retried == 0 and summary.failed == 0 and source.told == {} and source.attempts == []
    assert state.retried == 0 and state.unfinished == 3


def test_a_resumed_task_numbers_on_with_a_fresh_budget():
    class Resumed(ListSource):
        """One trial left running by an earlier run that had reached attempt 2."""

        def next_task(self):
            self.left, task = [], (Task("t9", 9, attempt=3, first_attempt=3) if self.left else None)
            return task

    source = Resumed(1)
    summary, _ = run(source, [FakeSlot(HEAD, 0, "crash")], max_attempts=2)
    assert summary.failed == 1
    status, failures = source.told["t9"]
    assert [f["attempt"] for f in failures] == [3, 4]


def test_max_attempts_must_be_positive():
    with pytest.raises(ValueError):
        Scheduler(ListSource(1), [], RunState(), max_attempts=0)


def test_an_ask_does_not_hold_up_another_slots_outcome():
    class SlowSecondAsk(ListSource):
        """The second ask lasts until the first task's outcome is settled (or 5 s): an ask taken under
        the scheduler's lock would keep that outcome waiting for the whole ask."""

        second_ask = threading.Event()

        def next_task(self):
            if self.order == ["ask0"]:
                self.second_ask.set()
                self.settled_during_ask = wait_for(lambda: scheduler.summary.complete == 1)
            return super().next_task()

    class FinishesDuringTheSecondAsk(FakeSlot):
        def execute(self, task):
            if task.key == "t0":
                source.second_ask.wait(5)  # the first outcome comes while the second ask runs
            return super().execute(task)

    source = SlowSecondAsk(3)
    slots = [FinishesDuringTheSecondAsk(HEAD, 0, "ok"), FinishesDuringTheSecondAsk(RIG_A, 0, "ok")]
    scheduler = Scheduler(source, slots, RunState())
    summary = scheduler.run()
    assert summary.complete == 3 and source.settled_during_ask


def test_a_task_asked_as_its_rig_is_quarantined_runs_elsewhere():
    class QuarantineDuringAsk(ListSource):
        """The second ask lasts until rig a is quarantined."""

        second_ask = threading.Event()

        def next_task(self):
            if self.order == ["ask0"]:
                self.second_ask.set()
                wait_for(lambda: "a" in scheduler.summary.quarantined)
            return super().next_task()

    class CrashDuringAsk(FakeSlot):
        def execute(self, task):
            QuarantineDuringAsk.second_ask.wait(5)
            return super().execute(task)

    class LateStart(FakeSlot):
        def start(self):
            time.sleep(0.1)  # the crashing slot asks first

    source = QuarantineDuringAsk(3)
    head, crash, late = FakeSlot(HEAD, 0, "slowstart"), CrashDuringAsk(RIG_A, 0, "crash"), LateStart(RIG_A, 1, "ok")
    scheduler = Scheduler(source, [head, crash, late], RunState(), quarantine_after=1)
    summary = scheduler.run()
    assert summary.complete == 3 and summary.quarantined
    assert crash.ran == [("t0", 1)] and late.ran == []
    assert ("t1", 1) in head.ran  # asked for the quarantined rig's slot, run first time on the head


def wait_for(done, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)
    return done()
