"""Bad input to `coordinator step2`: one clear error naming the file and the problem, exit status 2,
before any trial is dispatched. (Each inventory rule is tested in tests/test_inventory.py; here the CLI
is run on one malformed file.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.faults.helpers import Cluster, rigs_toml

MOD = 1000  # the synthetic data's modulus (its meta.json)


def holdout_draw_equal_to_mod(folder: Path) -> None:
    path = folder / "holdout_history.json"
    draws = json.loads(path.read_text())
    draws[7] = MOD
    path.write_text(json.dumps(draws))


def unknown_prng(folder: Path) -> None:
    path = folder / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "prng_type": "xorshift128"}))


@pytest.mark.parametrize("damage, args, file, problem", [
    (lambda d: (d / "holdout_history.json").unlink(), (), "holdout_history.json", "missing"),
    (lambda d: (d / "train_history.json").write_text("[1, 2,"), (), "train_history.json", "not valid JSON"),
    (lambda d: np.savez(d / "survivors.npz", other=np.arange(3)), (), "survivors.npz", "NPZ has no 'seeds' array"),
    (holdout_draw_equal_to_mod, (), "holdout_history.json", f"field 'draws[7]': {MOD} is outside [0, {MOD})"),
    (lambda d: None, ("--sample-size", "2000", "--eval-size", "2000"), "survivors.npz",
     "sample_size 2000 is larger than the pool of 1500 survivors"),
    (unknown_prng, (), "meta.json", "unknown PRNG type 'xorshift128'"),
], ids=["missing-file", "unreadable-file", "npz-without-seeds", "draw-outside-mod", "sample-over-pool",
        "unknown-prng"])
def test_bad_data_is_refused_before_dispatch(cluster: Cluster, tmp_path: Path, damage: Callable[[Path], object],
                                             args: tuple[str, ...], file: str, problem: str) -> None:
    cluster.data = shutil.copytree(cluster.data, tmp_path / "data")
    damage(cluster.data)
    cluster.assert_refused(cluster.step2(2, *args), str(cluster.data / file), problem)


def test_malformed_inventory_is_refused_before_dispatch(cluster: Cluster) -> None:
    inventory = rigs_toml(cluster.rigs) + "colour = 'red'\n"
    cluster.assert_refused(cluster.step2(2, inventory=inventory), "rigs.toml: rig 'head': unknown key 'colour'")
