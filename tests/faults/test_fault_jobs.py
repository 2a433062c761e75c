"""Hostile requests and job files sent to a real warm slot server over a real SSH channel (through its
rig's server): paths that leave the workdir, fields full of shell metacharacters. Nothing is executed,
nothing is written outside the workdir, and each one is refused: an error event, or a job that exits 2
naming the field (in its error result, or in its log when the job's identity itself is unsafe to write a
result under)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.dataset import load_data_dir
from coordinator.deploy import deploy, worker_bundle
from coordinator.rig_server import RigServer, SlotProcess
from coordinator.settings import RunSettings
from coordinator.transport.ssh import SshTransport
from tests.faults.helpers import SAMPLE_SIZE, FaultSummary, cluster_at
from worker import contract, protocol
from worker.contract import Evaluation
from worker.params import SEARCH_SPACE, Choice
from worker.protocol import BadRequest, Done, Ready, RunRequest

RUN_ID = "r-hostile"
JOB = "jobs/h/trial_0001.json"


@dataclass
class Worker:
    """A warm worker on an SSH rig, and a valid job for it to be broken case by case."""

    transport: SshTransport
    proc: SlotProcess
    workdir: Path
    job: dict[str, Any]
    marker: Path  # what an executed payload would create

    @property
    def payload(self) -> str:
        return f"$(touch {self.marker}) `touch {self.marker}`; touch {self.marker} && touch {self.marker} |"

    def ask(self, request: dict[str, Any]) -> protocol.Event:
        self.proc.send(RunRequest(**request))
        answer = self.proc.read(60)
        assert answer is not None, "the worker did not answer"
        return answer


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, data: Path, faults_summary: FaultSummary) -> Iterator[Worker]:
    root = tmp_path_factory.mktemp("hostile")
    with cluster_at(root / "head", data, faults_summary, "hostile") as world:
        world.ssh_rig("rig")
        transport = SshTransport(world.rig("rig"))
        dataset = load_data_dir(data)
        deploy(transport, {**worker_bundle(), **{ref.path: dataset.files[role] for role, ref in dataset.refs.items()}})
        (world.workdir("rig") / "data" / "outside.npz").symlink_to("/etc/passwd")
        server = RigServer(transport, contract.code_hash(), dataset.refs)
        try:
            proc = server.open(0)
            ready = proc.read(180)
            assert isinstance(ready, Ready), ready
            settings = RunSettings("h", RUN_ID, ready.code_hash, dataset.prng_type, dataset.mod, SAMPLE_SIZE,
                                   30.0, dataset.refs, Evaluation(1, SAMPLE_SIZE, 20, "spearman_rho"))
            params = {k: d.options[0] if isinstance(d, Choice) else d.low for k, d in SEARCH_SPACE.items()}
            yield Worker(transport, proc, world.workdir("rig"), settings.job(1, params, 1).to_dict(),
                         root / "pwned")
        finally:
            server.close()
            transport.close()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted field of a job."""

    def change(job: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            job = job[key]
        job[last] = value

    return change


PAYLOAD = "<payload>"  # replaced by the worker's payload, which names its marker file

REQUESTS = {  # request field, value: refused with an error event naming the field
    "job-traversal": ("job", "../../../etc/passwd"),
    "job-absolute": ("job", "/etc/passwd"),
    "job-metacharacters": ("job", f"jobs/h/{PAYLOAD}.json"),
    "log-traversal": ("log", "../../outside.log"),
}
JOBS = {  # job field, value, what the refusal says: the job exits 2 and says why
    "data-traversal": ("data.survivors.path", "../../../etc/passwd", "field 'data.survivors.path'"),
    "data-symlink-outside": ("data.survivors.path", "data/outside.npz", "field 'path': resolves outside"),
    "study-metacharacters": ("study", PAYLOAD, "field 'study'"),
    "run-id-metacharacters": ("run_id", PAYLOAD, "field 'run_id'"),
    "trial-id-traversal": ("trial_id", "../../trial_0001", "field 'trial_id'"),
    "param-metacharacters": ("params.hidden_layers", PAYLOAD, "field 'params.hidden_layers'"),
    "prng-metacharacters": ("prng.type", PAYLOAD, "field 'prng.type'"),
}


TEXTS = {  # where a request that carries its job's text asks for it to be written, and what the refusal says
    "text-traversal": ("../../outside-job.json", "field 'job'"),
    "text-through-a-link": ("jobs/elsewhere/trial_0001.json", "resolves outside"),
}


def _value(worker: Worker, value: str) -> str:
    return value.replace(PAYLOAD, worker.payload)


@pytest.mark.parametrize("case", REQUESTS)
def test_hostile_request_is_refused(worker: Worker, faults_summary: FaultSummary, request: pytest.FixtureRequest,
                                    case: str) -> None:
    field, value = REQUESTS[case]
    answer = worker.ask({"job": JOB, "timeout_s": 30, "log": f"logs/h/{case}.log", field: _value(worker, value)})
    assert isinstance(answer, BadRequest) and f"field '{field}'" in answer.error, answer
    assert not worker.marker.exists() and not (worker.workdir.parent / "outside.log").exists()
    faults_summary.report(request.node.nodeid, worker.workdir, 0)


@pytest.mark.parametrize("case", JOBS)
def test_hostile_job_is_refused(worker: Worker, faults_summary: FaultSummary, request: pytest.FixtureRequest,
                                case: str) -> None:
    field, value, refusal = JOBS[case]
    job = json.loads(json.dumps(worker.job))
    job["attempt"] = 1 + list(JOBS).index(case)  # each case its own result path
    _set(field, _value(worker, value))(job)
    worker.transport.put_bytes(json.dumps(job).encode(), JOB)
    log = f"logs/h/{case}.log"
    answer = worker.ask({"job": JOB, "timeout_s": 30, "log": log})
    assert isinstance(answer, Done) and answer.exit == 2, answer
    result = worker.workdir / protocol.result_path("h", RUN_ID, "trial_0001", job["attempt"])
    said = json.loads(result.read_text())["error"] if result.exists() else (worker.workdir / log).read_text()
    assert refusal in said, said
    assert not worker.marker.exists()
    assert [p.name for p in (worker.workdir / "results").glob("*/*")] in ([], [RUN_ID])  # no result elsewhere
    faults_summary.report(request.node.nodeid, worker.workdir, 0)


@pytest.mark.parametrize("case", TEXTS)
def test_job_text_is_never_written_outside_the_workdir(worker: Worker, faults_summary: FaultSummary,
                                                       request: pytest.FixtureRequest, case: str) -> None:
    path, refusal = TEXTS[case]
    outside = worker.workdir.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    link = worker.workdir / "jobs" / "elsewhere"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside)
    answer = worker.ask({"job": path, "timeout_s": 30, "log": f"logs/h/{case}.log", "text": json.dumps(worker.job)})
    assert isinstance(answer, BadRequest | Done) and answer.error and refusal in answer.error, answer
    assert not list(outside.iterdir()) and not (worker.workdir.parent.parent / "outside-job.json").exists()
    faults_summary.report(request.node.nodeid, worker.workdir, 0)
