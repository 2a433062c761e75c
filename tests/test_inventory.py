"""rigs.toml: the shipped file loads; every validation rule gives one error naming rig and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.inventory import InventoryError, load_inventory, parse_inventory

REPO = Path(__file__).resolve().parent.parent
SSH_RIG = 'name = "r1"\nhost = "10.0.0.1"\nuser = "u"\npython = "~/rocm_env/bin/python"\nworkdir = "~/step2"\n'


def parse(text: str):
    return parse_inventory(text, Path("rigs.toml"))


def test_shipped_inventory_is_the_local_head_only():
    rigs = load_inventory(REPO / "rigs.toml")
    assert [(r.name, r.local, r.slots) for r in rigs] == [("head", True, 2)]
    assert Path(rigs[0].python).is_absolute() and Path(rigs[0].workdir).is_absolute()


def test_commented_cluster_example_is_valid_toml_once_uncommented():
    lines = (REPO / "rigs.toml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [[rig]]"))
    example = "\n".join(line[2:] for line in lines[start:] if line.startswith("# ") or line == "#")
    rigs = parse(example)
    assert [r.name for r in rigs] == ["zeus", "rig-6600", "rig-6600b", "rig-6600c"]
    assert sum(r.slots for r in rigs) == 26
    assert rigs[1].slot_env(3) == {"HSA_OVERRIDE_GFX_VERSION": "10.3.0", "HIP_VISIBLE_DEVICES": "3"}


def test_slots_default_to_one_per_gpu_and_pin_exactly_one_variable():
    (rig,) = parse(f"[[rig]]\n{SSH_RIG}gpus = [0, 1, 2]\ngpu_env = 'ROCR_VISIBLE_DEVICES'\n")
    assert rig.slots == 3 and rig.slot_gpu(2) == 2
    assert rig.slot_env(1) == {"ROCR_VISIBLE_DEVICES": "1"}


@pytest.mark.parametrize("body, message", [
    (f"[[rig]]\n{SSH_RIG}slots = 1\ncolour = 'red'\n", "rig 'r1': unknown key 'colour'"),
    ("[[rig]]\nname = 'r1'\nuser = 'u'\npython = 'p'\nworkdir = 'w'\nslots = 1\n", "rig 'r1': missing key 'host'"),
    (f"[[rig]]\n{SSH_RIG}slots = 'two'\n", "rig 'r1': key 'slots' must be int"),
    (f"[[rig]]\n{SSH_RIG}slots = true\n", "rig 'r1': key 'slots' must be int"),
    (f"[[rig]]\n{SSH_RIG}\n", "rig 'r1': key 'slots' must be >= 1"),
    (f"[[rig]]\n{SSH_RIG}gpus = [0, 0]\n", "lists a GPU twice"),
    (f"[[rig]]\n{SSH_RIG}gpus = [0]\ngpu_env = 'GPU'\n", "key 'gpu_env' must be one of"),
    (f"[[rig]]\n{SSH_RIG}gpus = [0]\nenv = {{ HIP_VISIBLE_DEVICES = '1' }}\n", "use 'gpu_env'"),
    (f"[[rig]]\n{SSH_RIG}gpus = [0]\nport = 70000\n", "key 'port' must be 1..65535"),
    (f"[[rig]]\n{SSH_RIG}gpus = [0]\n[[rig]]\n{SSH_RIG}gpus = [0]\n", "rig 'r1': duplicate name"),
    ("[[rig]]\nname='a'\nlocal=true\npython='p'\nworkdir='w'\nslots=1\n"
     "[[rig]]\nname='b'\nlocal=true\npython='p'\nworkdir='w'\nslots=1\n", "more than one rig has local = true"),
    ("", "no [[rig]] tables"),
    ("[[rig]\n", "not valid TOML"),
    ("[defaults]\n", "unknown top-level key 'defaults'"),
])
def test_each_rule_names_the_rig_and_key(body: str, message: str):
    with pytest.raises(InventoryError) as err:
        parse(body)
    assert message in str(err.value) and str(err.value).startswith("rigs.toml")


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(InventoryError, match="nope.toml: cannot read inventory"):
        load_inventory(tmp_path / "nope.toml")
