"""`coordinator dashboard`: optuna-dashboard's real server over a study's journal, asked over HTTP as a
browser asks it: the page, the study list, the study's trials; and a write is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from coordinator.study import storage_path
from tests.sshd import free_port, wait_for
from tests.test_report import make_study

REPO = Path(__file__).resolve().parent.parent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_dashboard_serves_the_study_read_only(tmp_path: Path) -> None:
    make_study(tmp_path, "s", 5, fail=(2,))
    journal = storage_path("s", tmp_path / "optuna_studies")
    before = journal.read_bytes()
    port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "dashboard", "--port", str(port)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: get(f"{base}/api/studies")[0] == 200, 60), "the dashboard never answered"
        summaries = json.loads(get(f"{base}/api/studies")[1])["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["s"]  # the newest study, by default
        status, body = get(f"{base}/api/studies/{summaries[0]['study_id']}")
        trials = json.loads(body)["trials"]
        assert status == 200 and sorted(t["state"] for t in trials) == ["Complete"] * 4 + ["Fail"]
        status, page = get(f"{base}/dashboard")
        assert status == 200 and "<html" in page.lower()
        rename = urllib.request.Request(f"{base}/api/studies/{summaries[0]['study_id']}/rename", method="POST",
                                        data=json.dumps({"study_name": "other"}).encode(),
                                        headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(rename, timeout=10)
            refused = False
        except urllib.error.HTTPError as exc:
            refused = exc.code >= 400
        assert refused and journal.read_bytes() == before  # the journal is the coordinator's alone
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"study s ({Path('optuna_studies') / 's.journal'}, read-only) at {base}/dashboard" in out


def test_dashboard_of_an_unknown_study_says_which_exist(tmp_path: Path) -> None:
    make_study(tmp_path, "s", 1)
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "dashboard", "nope"], cwd=tmp_path, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60)
    assert done.returncode == 2 and "nope.journal: no such study (known: s)" in done.stderr
