"""`coordinator step2 --data DIR` on Step 1's output folder as it is: the exact files (22-array NPZ,
sidecar, config, JSON records, histories) with offsets, skip ranges, both directions and a hybrid share,
through symlinks too; and every way such a folder can be refused, before anything is created."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator.dataset import DataError, load_data_dir
from worker import demo

REPO = Path(__file__).resolve().parent.parent
STEP1 = ("bidirectional_survivors.json", "bidirectional_survivors_binary.npz",
         "bidirectional_survivors_binary.meta.json", "optimal_window_config.json", "train_history.json",
         "holdout_history.json")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo's Step 1 folder with every fifth survivor a reverse one and every seventh a
    hybrid (variable skip) one, written in Step 1's format."""
    made = demo.make("small", seed=1)
    records = [dict(r) for r in made.records]
    for i, record in enumerate(records):
        if i % 5 == 0:
            record["prng_type"] = "java_lcg_reverse"
        elif i % 7 == 0:
            record.update(prng_type="java_lcg_hybrid", skip_mode="variable")
    out = tmp_path_factory.mktemp("mixed")
    demo.write(dataclasses.replace(made, records=records), out)
    return out


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    rigs = cwd / "rigs.toml"
    rigs.write_text(f'[[rig]]\nname = "head"\nlocal = true\npython = "{sys.executable}"\nworkdir = ".rigs/head"\n'
                    "slots = 2\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "step2", "--no-tui", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def nothing_created(cwd: Path) -> bool:
    return not any((cwd / name).exists() for name in ("optuna_studies", "runs", "jobs", ".rigs"))


def test_the_mixed_folder_is_written_as_step1_writes_it(mixed: Path):
    with np.load(mixed / "bidirectional_survivors_binary.npz") as npz:
        codes, modes = npz["prng_type"], npz["skip_mode"]
    assert set(codes.tolist()) == {0, 1} and set(modes.tolist()) == {0, 1}  # reverse: code 1; hybrid: code 0
    assert {(int(c), int(m)) for c, m in zip(codes, modes, strict=True)} == {(0, 0), (1, 0), (0, 1)}


@pytest.mark.slow
def test_step2_runs_on_the_folder_as_it_is_and_through_symlinks(mixed: Path, tmp_path: Path):
    links = tmp_path / "links"
    links.mkdir()
    for name in STEP1:  # another name on the far side: the link's own name is what counts
        (tmp_path / f"step1-{name}").symlink_to(mixed / name)
        (links / name).symlink_to(tmp_path / f"step1-{name}")
    for folder, study in ((mixed, "as-is"), (links, "links")):
        done = run(tmp_path, "--data", str(folder), "--mod", "1000", "--trials", "2", "--sample-size", "300",
                   "--replicates", "2", "--eval-size", "300", "--confirm-replicates", "2", "--study", study)
        assert done.returncode == 0, done.stdout + done.stderr
        finals = [json.loads(p.read_text()) for p in (tmp_path / "runs" / study / "trials").glob("trial_????.json")]
        assert len(finals) == 2 and all(r["status"] == "success" for r in finals)
        assert all(r["diagnostics"]["reverse"] > 0 and r["diagnostics"]["hybrid"] > 0 for r in finals)
        assert all(sum(r["diagnostics"]["skips"].values()) == 600 for r in finals)
        staged = {p.name for p in (tmp_path / "runs" / study / "data").iterdir()}
        assert staged == {"bidirectional_survivors_binary.npz", "train_history.json", "holdout_history.json"}
        # where the generating seeds ranked, said at the end where the data's truth is known (not via links)
        lines = [line for line in done.stdout.splitlines() if "generating seed" in line]
        if folder == mixed:
            truth = json.loads((mixed / demo.TRUTH).read_text())
            assert all(str(g["seed"]) in line for g, line in zip(truth["generators"], lines, strict=True))
            assert sum("made the holdout" in line for line in lines) == 1
        else:
            assert lines == []


def test_json_records_alone_are_read_when_there_is_no_npz(mixed: Path, tmp_path: Path):
    folder = shutil.copytree(mixed, tmp_path / "json")
    (folder / "bidirectional_survivors_binary.npz").unlink()
    data = load_data_dir(folder, mod=1000)
    assert data.files["survivors"].name == "bidirectional_survivors.json" and data.layout == "step1"
    assert data.prng_type == "java_lcg"  # from optimal_window_config.json


@pytest.mark.parametrize("damage, args, words", [
    (lambda d: None, (), "Step 1's output does not state the draws' modulus; its sieve compares draws mod 1000:"
                         " give --mod 1000"),
    (lambda d: shutil.copy(d / "bidirectional_survivors_binary.npz", d / "bidirectional_survivors_all_binary.npz"),
     ("--mod", "1000"), "two survivors files, bidirectional_survivors_binary.npz and"
                        " bidirectional_survivors_all_binary.npz"),
    (lambda d: (d / "optimal_window_config.json").unlink(), ("--mod", "1000"),
     "optimal_window_config.json: give the data's PRNG family with --prng"),
], ids=["no-mod", "two-survivor-files", "no-family"])
def test_refused_before_anything_is_created(mixed: Path, tmp_path: Path, damage, args, words: str):
    folder = shutil.copytree(mixed, tmp_path / "data")
    damage(folder)
    done = run(tmp_path, "--data", str(folder), *args, "--trials", "2", "--sample-size", "100")
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert nothing_created(tmp_path)


def test_survivors_of_families_the_worker_lacks_are_refused_with_their_count(mixed: Path, tmp_path: Path):
    folder = shutil.copytree(mixed, tmp_path / "data")
    path = folder / "bidirectional_survivors_binary.npz"
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["prng_type"][:11] = 2  # mt19937
    arrays["prng_type"][11:14] = 4  # xorshift128
    np.savez_compressed(path, **arrays)
    done = run(tmp_path, "--data", str(folder), "--mod", "1000", "--trials", "2", "--sample-size", "100")
    assert done.returncode == 2, done.stderr
    assert ("14 survivors of families this worker does not implement: mt19937 (11), xorshift128 (3)"
            in done.stderr), done.stderr
    assert str(path) in done.stderr and nothing_created(tmp_path)


def test_a_sidecar_with_other_codes_is_refused(mixed: Path, tmp_path: Path):
    folder = shutil.copytree(mixed, tmp_path / "data")
    sidecar = folder / "bidirectional_survivors_binary.meta.json"
    meta = json.loads(sidecar.read_text())
    meta["encodings"]["prng_type"]["java_lcg_reverse"] = 3  # a later converter's table
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="field 'encodings.prng_type': codes for java_lcg_reverse differ"):
        load_data_dir(folder, mod=1000)


def test_the_projects_own_layout_without_meta_json_says_what_is_missing(tmp_path: Path):
    demo.write_uniform(tmp_path, n_survivors=10, n_train=30, n_holdout=10)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(DataError, match=r"no .*meta.json: give the data's PRNG family with --prng"):
        load_data_dir(tmp_path)
    with pytest.raises(DataError, match=r"no .*meta.json: give --mod"):
        load_data_dir(tmp_path, prng_type="java_lcg")
