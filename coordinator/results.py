"""Results on the head: the archive of every attempt's record, survivor coverage, and
`optimal_scorer_config.json` for Steps 3-6."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.chance import verdict
from coordinator.study import Study, TrialRecord, TrialState
from worker.files import write_json_atomic
from worker.objective import OBJECTIVES

if TYPE_CHECKING:
    from coordinator.confirm import Optimum

RUNS_DIR = Path("runs")


class Archive:
    """runs/<study>/trials/: trial_NNNN.json is the final attempt; trial_NNNN.aK.json every attempt."""

    def __init__(self, study: str, root: Path = RUNS_DIR):
        self.dir = root / study / "trials"

    def store(self, record: dict[str, Any], final: bool) -> Path:
        tid, attempt = record["trial_id"], record["attempt"]
        path = self.dir / f"{tid}.a{attempt}.json"
        write_json_atomic(path, record)
        if not final:
            return path
        final_path = self.dir / f"{tid}.json"
        link = final_path.with_name(f".{final_path.name}.{attempt}.link")
        link.unlink(missing_ok=True)
        os.link(path, link)  # the same bytes, already on disk: a second name, not a second write and fsync
        os.replace(link, final_path)
        return final_path

    def finals(self, kind: str = "trial") -> dict[str, dict[str, Any]]:
        """Each task's final record by its id: the trials', or ("confirm") the confirmations'."""
        out = {}
        for path in sorted(self.dir.glob(f"{kind}_*.json")):
            if path.stem.count(".") == 0:
                out[path.stem] = json.loads(path.read_text())
        return out


def expected_coverage(pool: int, sample: int, trials: int) -> float:
    """E[unique survivors seen] = N(1 - (1 - n/N)^k) for k independent samples of n out of N."""
    return pool * (1.0 - (1.0 - sample / pool) ** trials) if pool else 0.0


def coverage(finals: dict[str, dict[str, Any]], pool: int) -> dict[str, Any]:
    """How much of the survivor pool the completed trials actually sampled, against expectation."""
    done = [r for r in finals.values() if r.get("status") == "success" and r.get("sample_indices")]
    seen: set[int] = set()
    for record in done:
        seen.update(record["sample_indices"])
    sample = len(done[0]["sample_indices"]) if done else 0
    expected = expected_coverage(pool, sample, len(done))
    return {"pool": pool, "sample_size": sample, "trials": len(done), "unique_seen": len(seen),
            "fraction": len(seen) / pool if pool else 0.0, "expected_unique": round(expected, 1)}


def write_optimal_config(path: Path, study: Study, archive: Archive, pool: int, started: float,
                         confirm_top: int, found: Optimum | None) -> dict[str, Any]:
    """The optimum's params at top level (the keys Steps 3-6 read), its accuracy, and the context that
    says where it came from: the trial with the best confirmed value on fresh samples (its 95% interval,
    the search's own best value and both trial numbers beside it, so the selection bias is visible:
    `found`), or, with no confirmation asked for (confirm_top 0), the search's best, marked unconfirmed. Each figure's
    verdict says whether the study found more than chance. Refuses to write when there is no optimum:
    no trial completed, or none of the candidates was confirmed."""
    trials = study.trials()
    best = study.best()
    if best is None:
        raise RuntimeError(f"study {study.name}: no trial completed; {path} not written")
    if confirm_top and found is None:
        raise RuntimeError(f"study {study.name}: none of its best {confirm_top} trials was confirmed; {path} not"
                           " written")
    chosen = found.trial if found else best
    meta = study.meta()
    counts = trial_counts(trials)
    objective = meta["evaluation"]["objective"]
    config = {
        **{k: v for k, v in chosen.params.items()},
        "accuracy": found.confirmed["value"] if found else best.value,
        "_run_context": {
            "study": study.name,
            "storage": str(study.path),
            "trial_number": chosen.number,
            "run_id": chosen.attrs.get("run_id"),
            "objective": objective,
            "confirmation": found.to_dict() if found else None,
            "verdict": {name: verdict(trials, name).to_dict() for name in OBJECTIVES},
            "evaluation": meta["evaluation"],
            "code_hash": meta.get("code_hash"),
            "worker_version": meta.get("worker_version"),
            "data": meta.get("data"),
            "prng": meta.get("prng"),
            "sample_size": meta.get("sample_size"),
            **counts,
            "survivor_coverage": coverage(archive.finals(), pool),
            "seconds": round(time.time() - started, 2),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    if not math.isfinite(config["accuracy"]):
        raise RuntimeError(f"study {study.name}: best value {best.value} is not finite")
    write_json_atomic(path, config)
    return config


def keep_previous(path: Path) -> Path | None:
    """Before a new file replaces `path`: give the one there a second name beside it (`<stem>.<its
    mtime>.json`), so no earlier optimum is ever lost. Returns that name, or None when there was none.
    The new file then replaces `path` in one rename: at no moment is there no file at `path`."""
    if not path.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(path.stat().st_mtime))
    for n in range(1, 1000):
        kept = path.with_name(f"{path.stem}.{stamp}{'' if n == 1 else f'-{n}'}{path.suffix}")
        try:
            os.link(path, kept)
            return kept
        except FileExistsError:
            continue
    raise RuntimeError(f"{path}: cannot find a free name to keep it under beside it")


def trial_counts(trials: list[TrialRecord]) -> dict[str, int]:
    states = [t.state for t in trials]
    return {"complete": states.count(TrialState.COMPLETE), "failed": states.count(TrialState.FAIL),
            "running": states.count(TrialState.RUNNING),
            "retried": sum(1 for t in trials if t.attrs.get("attempts", 1) > 1)}
