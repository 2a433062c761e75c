"""Demo data made the way Step 1 makes it, in Step 1's output format, with the truth beside it.

The draws: a reseeding lottery. A few java_lcg generators take over from each other; each makes the
draws of its segment at its own offset and skip (draw j <-> step o + (j - o + 1)(k + 1), o = the
segment's first draw), and a share of the draws are uniform noise that no generator made. The last
generator makes the end of the train history and the whole holdout.

The survivors: one Step 1 trial per generator, a window at the generator's offset with a skip range
around its skip, sieved forward and reverse (worker/sieve.py) over one candidate set; the bidirectional
survivors, each seed once (the highest score wins, as Step 1 keeps them), written as Step 1 writes them:
bidirectional_survivors.json, its 22-array NPZ and sidecar, optimal_window_config.json, the lottery
file and train_history.json / holdout_history.json (80 / 20). demo_truth.json (not a Step 1 file) says
what made the draws; only the report reads it.

The candidates: a contiguous range that holds the generators' seeds, plus each generator's residue
class mod 2^band_bits inside the 32-bit seeds. For java_lcg the draws mod 8 depend only on the state's
low 19 bits, so a seed that shares them with a generator agrees with its draws mod 8 forever and
matches them exactly 8 times as often as chance: structure the residue features can find. A
contiguous range holds one such seed per 2^19 candidates, so a faithful sieve of one at this scale
keeps a handful among thousands; the residue classes are the designed part of the demo (chapter 3).

The null variant keeps the same survivors and replaces the draws with uniform ones: whatever a study
finds there is chance.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from worker.files import write_atomic, write_json_atomic
from worker.prng import GENERATORS, STEP1_CODES
from worker.prng.affine import AffineGenerator
from worker.sieve import Candidates, Passed, sieve_pass

MOD = 1000  # Step 1 compares draws mod 1000
SPLIT = 0.8  # Step 1's train share of the lottery file
SESSIONS = ("midday", "evening")
ARRAYS_INT = ("window_size", "offset", "trial_number", "skip_min", "skip_max", "skip_range")
ARRAYS_FLOAT = ("forward_count", "reverse_count", "bidirectional_count", "intersection_count", "intersection_ratio",
                "intersection_weight", "bidirectional_selectivity", "forward_only_count", "reverse_only_count",
                "survivor_overlap_ratio", "score")
NPZ_ORDER = ("seeds", "forward_matches", "reverse_matches", *ARRAYS_INT, *ARRAYS_FLOAT, "skip_mode", "prng_type")
ENCODINGS = {"skip_mode": {"constant": 0, "variable": 1},
             "prng_type": {f"{f}{'_reverse' if r else ''}": code for code, (f, r) in STEP1_CODES.items()}}
LOTTERY = "synthetic_lottery.json"
TRUTH = "demo_truth.json"


@dataclass(frozen=True)
class Segment:
    """A generator and the draws it makes: [start, end), at offset `start`, with skip `skip`."""

    seed: int
    start: int
    end: int
    skip: int


@dataclass(frozen=True)
class Trial:
    """One Step 1 trial: a window of `window` draws at `offset`, skips in [skip_min, skip_max], and the
    match rates a seed needs forward and reverse."""

    offset: int
    window: int
    skip_min: int
    skip_max: int
    forward_threshold: float
    reverse_threshold: float


@dataclass(frozen=True)
class Scale:
    """How big the demo is, and how its sieve runs."""

    draws: int
    boundaries: tuple[int, ...]  # where each generator's segment starts; the first is 0
    skips: tuple[int, ...]  # each generator's skip
    windows: tuple[int, ...]  # each trial's window
    forward_matches: tuple[int, ...]  # matches a seed needs in each trial's window, forward
    range_start: int
    range_count: int
    band_bits: int  # each generator's residue class mod 2^band_bits joins the candidates
    noise: float = 0.2


SCALES = {
    # About the proposal's scale: ~17,000 survivors, 4,000 train and 1,000 holdout draws.
    "demo": Scale(5000, (0, 1300, 2600), (0, 4, 2), (250, 250, 500), (3, 3, 4), 100_000_000, 1_300_000, 17),
    # The same design, small and quick (a few seconds): for tests and smoke runs.
    "small": Scale(2500, (0, 1250), (1, 2), (200, 300), (3, 4), 100_000_000, 150_000, 20),
}


@dataclass
class Demo:
    """Everything a demo run made, before it is written."""

    scale: str
    seed: int
    segments: list[Segment]
    trials: list[Trial]
    draws: np.ndarray
    made_by: np.ndarray  # per draw: the segment's generator index, or -1 for noise
    records: list[dict[str, Any]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)  # per trial: its counts; did its generator pass


def make(scale: str = "demo", seed: int = 0) -> Demo:
    """Draw the lottery and run Step 1's trials over it."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    design, generator = SCALES[scale], GENERATORS["java_lcg"]
    assert isinstance(generator, AffineGenerator)
    rng = np.random.default_rng(seed)
    offsets = rng.choice(design.range_count, len(design.skips), replace=False)
    seeds = sorted(design.range_start + int(s) for s in offsets)
    ends = (*design.boundaries[1:], design.draws)
    segments = [Segment(s, a, b, k) for s, a, b, k in zip(seeds, design.boundaries, ends, design.skips, strict=True)]
    draws, made_by = rng.integers(0, MOD, design.draws), np.full(design.draws, -1)
    for index, seg in enumerate(segments):
        j = np.arange(seg.start, seg.end)
        base = seg.start + (1 - seg.start) * (seg.skip + 1)
        draws[j] = generator.outputs(np.array([seg.seed], np.uint64), base + (seg.skip + 1) * seg.start, seg.skip + 1,
                                     len(j), MOD)[0]
        made_by[j] = index
    noise = rng.random(design.draws) < design.noise
    draws[noise], made_by[noise] = rng.integers(0, MOD, int(noise.sum())), -1
    trials = [Trial(seg.start, w, max(seg.skip - 1, 0), seg.skip + 1, m / w, 1 / w)
              for seg, w, m in zip(segments, design.windows, design.forward_matches, strict=True)]
    demo = Demo(scale, seed, segments, trials, draws, made_by)
    candidates = _candidates(design, segments)
    for number, trial in enumerate(trials, start=1):
        _sieve(demo, generator, candidates, number, trial)
    demo.records = _best_per_seed(demo.records)
    return demo


def _candidates(design: Scale, segments: list[Segment]) -> Candidates:
    """The contiguous range, plus the generators' residue classes outside it."""
    step = np.uint64(1 << design.band_bits)
    bands = [np.uint64(seg.seed % (1 << design.band_bits)) + step * np.arange(2 ** (32 - design.band_bits),
                                                                               dtype=np.uint64)
             for seg in segments]
    extra = np.unique(np.concatenate(bands))
    outside = (extra < design.range_start) | (extra >= design.range_start + design.range_count)
    return Candidates(design.range_start, design.range_count, extra[outside])


def _sieve(demo: Demo, generator: AffineGenerator, candidates: Candidates, number: int, trial: Trial) -> None:
    """One trial's forward and reverse passes; its bidirectional survivors join the records."""
    window = demo.draws[trial.offset:trial.offset + trial.window]
    skips = range(trial.skip_min, trial.skip_max + 1)
    forward, reverse = (sieve_pass(generator, candidates, window, trial.offset, skips, threshold, MOD, backwards)
                        for threshold, backwards in ((trial.forward_threshold, False), (trial.reverse_threshold, True)))
    both = np.intersect1d(forward.seeds, reverse.seeds)
    union = len(np.union1d(forward.seeds, reverse.seeds))
    f, r, b = len(forward.seeds), len(reverse.seeds), len(both)
    context = {"window_size": trial.window, "offset": trial.offset, "skip_min": trial.skip_min,
               "skip_max": trial.skip_max, "skip_range": trial.skip_max - trial.skip_min, "sessions": list(SESSIONS),
               "trial_number": number, "prng_base": "java_lcg", "skip_mode": "constant", "prng_type": "java_lcg",
               "forward_count": f, "reverse_count": r, "bidirectional_count": b, "intersection_count": b,
               "intersection_ratio": b / max(union, 1), "forward_only_count": f - b, "reverse_only_count": r - b,
               "survivor_overlap_ratio": b / max(f, 1), "bidirectional_selectivity": f / max(r, 1),
               "intersection_weight": b / max(f + r, 1)}
    rates = [_rates(p, both) for p in (forward, reverse)]
    for seed, fr, rr in zip(both.tolist(), *rates, strict=True):
        demo.records.append({"seed": seed, "forward_match_rate": fr, "reverse_match_rate": rr, "score": (fr + rr) / 2,
                             **context})
    seed = demo.segments[number - 1].seed
    demo.passes.append({"forward": f, "reverse": r, "bidirectional": b,
                        "generator_forward": bool(seed in forward.seeds),
                        "generator_reverse": bool(seed in reverse.seeds)})


def _rates(passed: Passed, seeds: np.ndarray) -> list[float]:
    """The float32 rates of `seeds` in a pass, as Python floats (what Step 1's JSON holds)."""
    order = np.argsort(passed.seeds)
    return [float(x) for x in passed.rate[order][np.searchsorted(passed.seeds[order], seeds)]]


def _best_per_seed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per seed, the highest score (the first on ties), sorted by seed."""
    best: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["seed"] not in best or record["score"] > best[record["seed"]]["score"]:
            best[record["seed"]] = record
    return [best[seed] for seed in sorted(best)]


def write(demo: Demo, out: Path, null: bool = False) -> dict[str, Any]:
    """Write the Step 1 folder (the null variant: the same survivors, uniform draws); returns the truth."""
    out.mkdir(parents=True, exist_ok=True)
    draws = np.random.default_rng([demo.seed, 1]).integers(0, MOD, len(demo.draws)) if null else demo.draws
    survivors_json = (json.dumps(demo.records, indent=2)).encode()
    write_atomic(out / "bidirectional_survivors.json", survivors_json)
    npz = out / "bidirectional_survivors_binary.npz"
    write_atomic(npz, _npz(demo.records))
    write_json_atomic(out / "bidirectional_survivors_binary.meta.json", _sidecar(out, len(demo.records),
                                                                               len(survivors_json), npz))
    write_json_atomic(out / "optimal_window_config.json", _config(demo))
    split = int(len(draws) * SPLIT)
    write_atomic(out / LOTTERY, json.dumps([{"draw": int(d), "session": SESSIONS[i % 2]}
                                            for i, d in enumerate(draws)], indent=2).encode())
    write_atomic(out / "train_history.json", json.dumps([int(d) for d in draws[:split]], indent=2).encode())
    write_atomic(out / "holdout_history.json", json.dumps([int(d) for d in draws[split:]], indent=2).encode())
    kept = {r["seed"] for r in demo.records}
    truth = {"scale": demo.scale, "seed": demo.seed, "null": null, "prng_type": "java_lcg", "mod": MOD,
             "generators": [{**asdict(s), "in_pool": s.seed in kept} for s in demo.segments],
             "trials": [asdict(t) for t in demo.trials],
             "passes": demo.passes, "noise_draws": int((demo.made_by < 0).sum()),
             "holdout_generator": None if null else demo.segments[-1].seed,
             "note": "uniform draws: no generator made them" if null else "each generator makes its segment's draws"
                                                                          " but the noise draws"}
    write_json_atomic(out / TRUTH, truth)
    return truth


def _npz(records: list[dict[str, Any]]) -> bytes:
    """The converter's 22 arrays, in its order and dtypes, compressed."""
    arrays: dict[str, np.ndarray] = {
        "seeds": np.array([r["seed"] for r in records], dtype=np.uint32),
        "forward_matches": np.array([r["forward_match_rate"] for r in records], dtype=np.float32),
        "reverse_matches": np.array([r["reverse_match_rate"] for r in records], dtype=np.float32),
        **{k: np.array([r[k] for r in records], dtype=np.int32) for k in ARRAYS_INT},
        **{k: np.array([r[k] for r in records], dtype=np.float32) for k in ARRAYS_FLOAT},
        "skip_mode": np.array([ENCODINGS["skip_mode"][r["skip_mode"]] for r in records], dtype=np.uint8),
        "prng_type": np.array([ENCODINGS["prng_type"].get(r["prng_type"], 0) for r in records], dtype=np.uint8),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: arrays[name] for name in NPZ_ORDER})
    return buffer.getvalue()


def _sidecar(out: Path, count: int, input_bytes: int, npz: Path) -> dict[str, Any]:
    output_bytes = npz.stat().st_size
    return {"version": "3.1.0", "source_file": str((out / "bidirectional_survivors.json").absolute()),
            "output_file": str(npz.absolute()), "survivor_count": count,
            "forward_matches_source": "forward_match_rate per-seed (v3.1+)",
            "reverse_matches_source": "reverse_match_rate per-seed (v3.1+)",
            "arrays": {"core": ["seeds", "forward_matches", "reverse_matches"], "metadata_int": list(ARRAYS_INT),
                       "metadata_float": list(ARRAYS_FLOAT), "categorical": ["skip_mode", "prng_type"]},
            "array_count": len(NPZ_ORDER), "input_size_bytes": input_bytes, "output_size_bytes": output_bytes,
            "compression_ratio": input_bytes / max(output_bytes, 1), "converted_at": datetime.now().isoformat(),
            "encodings": ENCODINGS}


def _config(demo: Demo) -> dict[str, Any]:
    """optimal_window_config.json: the trial with the most bidirectional survivors."""
    best = max(range(len(demo.trials)), key=lambda i: demo.passes[i]["bidirectional"])
    trial, counts = demo.trials[best], demo.passes[best]
    design = SCALES[demo.scale]
    return {"window_size": trial.window, "offset": trial.offset, "skip_min": trial.skip_min,
            "skip_max": trial.skip_max, "sessions": list(SESSIONS), "prng_type": "java_lcg", "test_both_modes": False,
            "seed_count": design.range_count, "optimization_score": float(counts["bidirectional"]),
            "forward_count": counts["forward"], "reverse_count": counts["reverse"],
            "bidirectional_count": counts["bidirectional"],
            "agent_metadata": {
                "inputs": [{"file": LOTTERY, "required": True}],
                "outputs": ["optimal_window_config.json", "bidirectional_survivors.json", "train_history.json",
                            "holdout_history.json"],
                "parent_run_id": None, "pipeline_step": 1, "pipeline_step_name": "window_optimizer",
                "follow_up_agent": "scorer_meta_agent", "confidence": 0.95,
                "suggested_params": {"window_size": trial.window, "forward_threshold": trial.forward_threshold,
                                     "reverse_threshold": trial.reverse_threshold, "k_folds": 5},
                "reasoning": f"Optimization found {counts['bidirectional']} survivors with score"
                             f" {float(counts['bidirectional']):.4f}",
                "timestamp_injected": datetime.now(UTC).isoformat()},
            "run_id": "step1_" + datetime.now().strftime("%Y%m%d_%H%M%S") + "_00000"}


def write_uniform(out: Path, n_survivors: int, n_train: int, n_holdout: int, seed: int = 0,
                  mod: int = MOD, prng: str = "java_lcg") -> None:
    """The project's own layout with no signal at all: random seeds, uniform draws, meta.json."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    npz = io.BytesIO()
    np.savez(npz, seeds=rng.integers(0, 2**63, n_survivors, dtype=np.int64).astype(np.uint64))
    write_atomic(out / "survivors.npz", npz.getvalue())
    draws = rng.integers(0, mod, n_train + n_holdout)
    write_json_atomic(out / "train_history.json", draws[:n_train].tolist())
    write_json_atomic(out / "holdout_history.json", draws[n_train:].tolist())
    write_json_atomic(out / "meta.json", {"prng_type": prng, "mod": mod, "mode": "uniform", "seed": seed})


def demo_command(out: Path, scale: str, seed: int, null: Path | None) -> int:
    """`python -m worker demo`: make the demo, write it (and its null variant), say what was written."""
    demo = make(scale, seed)
    write(demo, out)
    if null is not None:
        write(demo, null, null=True)
    per_trial = ", ".join(f"trial {i}: {p['forward']:,} forward, {p['reverse']:,} reverse, {p['bidirectional']:,}"
                          " both" for i, p in enumerate(demo.passes, start=1))
    print(f"wrote Step 1 demo data to {out}{f' and its null variant to {null}' if null else ''}: "
          f"{len(demo.records):,} survivors ({per_trial}); {int(len(demo.draws) * SPLIT):,} train /"
          f" {len(demo.draws) - int(len(demo.draws) * SPLIT):,} holdout draws, java_lcg mod {MOD}, seed {seed}")
    return 0
