"""`coordinator step2` across real OpenSSH rigs on loopback plus the local head: a full run, and a
rig that dies mid-run whose trials finish on the head with the accuracy a clean run gives."""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path

import pytest

from coordinator.events import Event, Fanout, RunState
from coordinator.inventory import Rig
from coordinator.step2 import Step2Options, run_step2
from coordinator.study import Study
from tests.faults.helpers import rigs_toml
from tests.sshd import SshServer, wait_for
from worker.bench import make_job
from worker.contract import Evaluation
from worker.trial import run_trial

pytestmark = pytest.mark.slow
SAMPLE = 120
EVALUATION = Evaluation(replicates=2, eval_size=240, nulls=50, objective="spearman_rho")


@pytest.fixture(scope="module")
def data(small_demo: Path) -> Path:
    return small_demo


def clean_accuracy(data: Path, record: dict) -> float:
    """The trial run again on the head, outside the coordinator: what a clean run gives."""
    params = {k: v for k, v in record["params"].items() if k != "optuna_trial_number"}
    return run_trial(make_job(data, params, record["optuna_trial_number"], sample_size=SAMPLE, evaluation=EVALUATION),
                     data).accuracy


def step2(root: Path, data: Path, rigs: list[Rig], trials: int, watcher=None,
          quarantine_after: int = 3) -> tuple[object, Study, Path]:
    (root / "rigs.toml").write_text(rigs_toml(rigs))
    opts = Step2Options(rigs=root / "rigs.toml", data=data, mod=1000, trials=trials, sample_size=SAMPLE, study="c",
                        replicates=EVALUATION.replicates, eval_size=EVALUATION.eval_size, nulls=EVALUATION.nulls,
                        confirm_top=0, quarantine_after=quarantine_after,
                        timeout_s=60, output=root / "optimal_scorer_config.json",
                        studies_dir=root / "optuna_studies", runs_dir=root / "runs")
    state = RunState()
    result = run_step2(opts, Fanout(state, *([watcher] if watcher else [])), out=io.StringIO())
    study = Study("c", result.storage, seed=0, create=False, writer=False)
    return result, study, root / "runs" / "c" / "trials"


def head(root: Path, slots: int = 1) -> Rig:
    return Rig(name="head", python=sys.executable, workdir=str(root / "head"), slots=slots, local=True)


def test_trials_across_two_ssh_rigs_and_the_head(tmp_path: Path, ssh_server, data: Path):
    a, b = ssh_server(), ssh_server()
    rigs = [head(tmp_path), a.rig("a", slots=2), b.rig("b", slots=2)]
    # enough trials that both rigs get some, however long one's warm-up takes on a loaded machine
    result, study, trials = step2(tmp_path, data, rigs, 30)
    records = {t.number: t for t in study.trials()}
    assert [t.state for t in records.values()] == ["COMPLETE"] * 30
    assert {t.attrs["rig"] for t in records.values()} >= {"a", "b"}  # both SSH rigs ran trials
    finals = {int(p.stem[6:]): json.loads(p.read_text()) for p in trials.glob("trial_????.json")}
    assert {n: r["accuracy"] for n, r in finals.items()} == {n: t.value for n, t in records.items()}
    remote = next(r for r in finals.values() if records[r["optuna_trial_number"]].attrs["rig"] != "head")
    assert clean_accuracy(data, remote) == remote["accuracy"]  # same job, same number, rig or head
    config = json.loads((tmp_path / "optimal_scorer_config.json").read_text())
    assert config["accuracy"] == max(t.value for t in records.values())
    assert not a.processes() and not b.processes()  # the warm workers ended with the run


def test_a_rig_killed_mid_run_finishes_its_trials_on_the_head(tmp_path: Path, ssh_server, data: Path):
    doomed: SshServer = ssh_server()
    rig = doomed.rig("doomed", slots=2)
    killed = threading.Event()

    class KillOnFirstRemoteTrial:
        """Kill the rig once a trial is really running there (its log opened), as a power cut would."""

        def notify(self, event: Event) -> None:
            if event.kind == "started" and event.rig == "doomed" and not killed.is_set():
                killed.set()
                logs = Path(rig.workdir) / "logs"
                threading.Thread(target=lambda: wait_for(lambda: any(logs.rglob("*.log")), 30)
                                 and doomed.kill(), daemon=True).start()

    # its first failure leaves it out, whether or not trials are left for its other slot to try
    result, study, trials = step2(tmp_path, data, [head(tmp_path), rig], 16, KillOnFirstRemoteTrial(),
                                  quarantine_after=1)
    assert killed.is_set() and result.summary.quarantined.get("doomed")
    records = study.trials()
    assert [t.state for t in records] == ["COMPLETE"] * 16
    moved = [t for t in records if t.attrs.get("failures")]
    assert moved, "no trial was caught on the dying rig"
    for trial in moved:
        assert trial.attrs["rig"] == "head" and trial.attrs["failures"][0]["rig"] == "doomed"
        final = json.loads((trials / f"trial_{trial.number:04d}.json").read_text())
        assert final["attempt"] == 2 and final["optuna_trial_number"] == trial.number
        assert json.loads((trials / f"trial_{trial.number:04d}.a1.json").read_text())["status"] == "error"
        assert trial.value == clean_accuracy(data, final)
    assert not doomed.processes()
