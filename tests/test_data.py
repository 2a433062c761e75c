import dataclasses
import json
import shutil

import numpy as np
import pytest

from worker import data as data_module
from worker.bench import make_job
from worker.contract import ContractError, DataRef, parse_job
from worker.data import load_dataset
from worker.demo import write_uniform
from worker.files import sha256_file
from worker.params import random_params

PARAMS = random_params(np.random.default_rng(0))


@pytest.fixture()
def root(tmp_path):
    write_uniform(tmp_path, n_survivors=40, n_train=300, n_holdout=100, seed=2)
    return tmp_path


def job_for(root, sample_size=10, mod=1000, **files):
    """A job for root's synthetic files, with some roles pointed at other files (hashes recomputed)."""
    job = make_job(root, PARAMS, sample_size=sample_size, mod=mod)
    data = dict(job.payload.data)
    for role, name in files.items():
        data[role] = DataRef(name, sha256_file(root / name) if (root / name).is_file() else "0" * 64)
    return dataclasses.replace(job.payload, data=data)


def write(root, name, obj):
    (root / name).write_text(json.dumps(obj))
    return name


def expect_error(job, root, path, field, words):
    with pytest.raises(ContractError) as err:
        load_dataset(job, root)
    assert err.value.source == str((root / path).resolve())
    assert err.value.field == field
    assert words in err.value.problem
    return err.value


def test_loads_the_three_files(root):
    ds = load_dataset(job_for(root), root)
    assert ds.seeds.dtype == np.uint64 and len(ds.seeds) == 40
    assert ds.train.shape == (300,) and ds.holdout.shape == (100,)
    assert np.array_equal(ds.seeds, np.load(root / "survivors.npz")["seeds"])
    assert ds.train.tolist() == json.loads((root / "train_history.json").read_text())


def test_json_survivors_and_draw_objects(root):
    seeds = [{"seed": 5, "score": 0.1}, {"seed": 2**64 - 1}, {"seed": -1}]
    job = job_for(root, sample_size=3, survivors=write(root, "s.json", seeds),
                  train_history=write(root, "t.json", [{"draw": d} for d in (1, 2, 3)]),
                  holdout_history=write(root, "h.json", [4]))
    ds = load_dataset(dataclasses.replace(job, sample_size=2, evaluation=dataclasses.replace(job.evaluation,
                                                                                             eval_size=2)), root)
    assert ds.seeds.tolist() == [5, 2**64 - 1]  # -1 is 2**64 - 1: one survivor, listed twice
    assert ds.survivors.duplicates == 1
    assert ds.train.tolist() == [1, 2, 3] and ds.holdout.tolist() == [4]
    job = job_for(root, sample_size=3, survivors=write(root, "plain.json", [7, 8, 9]))
    assert load_dataset(job, root).seeds.tolist() == [7, 8, 9]


def test_cache_skips_hashing_until_the_file_changes(root, monkeypatch):
    hashed = []
    monkeypatch.setattr(data_module, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    cache: dict = {}
    first = load_dataset(job_for(root), root, cache)
    second = load_dataset(job_for(root), root, cache)
    assert len(hashed) == 3 and second.seeds is first.seeds
    assert not first.train.flags.writeable  # shared between trials: nobody may change it
    write(root, "train_history.json", [1] * 300)
    third = load_dataset(job_for(root), root, cache)
    assert len(hashed) == 4 and third.train.tolist() == [1] * 300


def test_hash_mismatch_names_the_file(root):
    job = job_for(root)
    write(root, "holdout_history.json", [0] * 100)
    expect_error(job, root, "holdout_history.json", "sha256", "the job expects")


def test_missing_file(root):
    expect_error(job_for(root, train_history="nope.json"), root, "nope.json", "<file>", "No such file")


def test_unreadable_file(root):
    (root / "dir.json").mkdir()
    expect_error(job_for(root, train_history="dir.json"), root, "dir.json", "<file>", "cannot read")


def test_bad_json(root):
    (root / "bad.json").write_text("[1, 2,")
    expect_error(job_for(root, holdout_history="bad.json"), root, "bad.json", "<file>", "not valid JSON")


def test_npz_without_seeds(root):
    np.savez(root / "other.npz", survivors=np.arange(5))
    expect_error(job_for(root, survivors="other.npz"), root, "other.npz", "seeds", "no 'seeds'")


def test_npz_that_is_not_an_archive(root):
    (root / "junk.npz").write_bytes(b"not a zip")
    expect_error(job_for(root, survivors="junk.npz"), root, "junk.npz", "<file>", "NPZ")


def test_float_seeds(root):
    np.savez(root / "f.npz", seeds=np.array([1.5, 2.0]))
    expect_error(job_for(root, sample_size=2, survivors="f.npz"), root, "f.npz", "seeds", "integer")


@pytest.mark.parametrize(("role", "bad"), [("train_history", 1000), ("holdout_history", -1)])
def test_draws_outside_the_modulus(root, role, bad):
    draws = json.loads((root / f"{role}.json").read_text())
    draws[17] = bad
    job = job_for(root, **{role: write(root, "x.json", draws)})
    err = expect_error(job, root, "x.json", "draws[17]", "outside [0, 1000)")
    assert str(bad) in err.problem


def test_non_integer_draw(root):
    job = job_for(root, holdout_history=write(root, "x.json", [1, 2.5]))
    expect_error(job, root, "x.json", "draws[1]", "integer")


def test_empty_pool(root):
    np.savez(root / "empty.npz", seeds=np.array([], dtype=np.int64))
    expect_error(job_for(root, survivors="empty.npz"), root, "empty.npz", "seeds", "empty")


def test_sample_larger_than_pool(root):
    expect_error(job_for(root, sample_size=41), root, "survivors.npz", "seeds", "larger than the pool of 40")


def test_train_must_be_longer_than_holdout(root):
    job = job_for(root, train_history=write(root, "short.json", [1] * 100))
    expect_error(job, root, "short.json", "draws", "nothing to fit")


def test_path_may_not_leave_the_work_directory(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(root / "survivors.npz", outside / "survivors.npz")
    (root / "link.npz").symlink_to(outside / "survivors.npz")
    with pytest.raises(ContractError, match="outside the work directory"):
        load_dataset(job_for(root, survivors="link.npz"), root)


def test_trial_number_is_required_by_the_job_contract(root):
    job = make_job(root, PARAMS).to_dict()
    del job["params"]["optuna_trial_number"]
    with pytest.raises(ContractError) as err:
        parse_job(job, "jobs/bench/trial_0000.json")
    assert err.value.field == "params.optuna_trial_number" and "missing" in err.value.problem


def test_repeated_survivors_are_dropped_only_when_their_alignment_repeats_too(tmp_path):
    from worker.survivors import read_survivors

    seeds = np.array([5, 6, 5, 7, 5, 6], dtype=np.uint32)
    offset = np.array([0, 0, 0, 0, 3, 0], dtype=np.int32)  # the third and the last repeat a row; the fifth does not
    zeros = np.zeros(len(seeds), dtype=np.int32)
    np.savez(tmp_path / "s.npz", seeds=seeds, offset=offset, skip_min=zeros, skip_max=zeros + 2,
             skip_mode=zeros.astype(np.uint8), window_size=zeros + 8, prng_type=zeros.astype(np.uint8))
    pool = read_survivors(tmp_path / "s.npz")
    assert pool.seeds.tolist() == [5, 6, 7, 5] and pool.offset.tolist() == [0, 0, 0, 3]  # first-seen order
    assert pool.duplicates == 2
