import numpy as np
import pytest

from worker.contract import ContractError
from worker.prng import GENERATORS, get_generator

SEEDS = np.array([0, 1, 42, 2**31 - 1, 2**48 - 1, 2**48 + 5, 2**63 + 12345, 2**64 - 1], dtype=np.uint64)


def reference(gen, seed: int, start: int, count: int, mod: int) -> list[int]:
    """The generator's definition stepped one draw at a time with Python integers."""
    state = seed % 2**64 % gen.modulus
    if state == 0 and gen.increment % gen.modulus == 0:
        state = 1
    out = []
    for position in range(1, start + count):
        state = (gen.multiplier * state + gen.increment) % gen.modulus
        if position >= start:
            out.append((state >> gen.shift) % mod)
    return out


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(("start", "mod"), [(1, 1000), (37, 7), (500, 2**32)])
def test_draws_match_big_int_reference(name, start, mod):
    gen = GENERATORS[name]
    got = gen.draws(SEEDS, start, 60, mod)
    assert got.shape == (len(SEEDS), 60)
    assert got.tolist() == [reference(gen, int(s), start, 60, mod) for s in SEEDS]


def test_java_lcg_is_java_util_random():
    # new java.util.Random(42).nextInt() twice; Random scrambles its seed with the multiplier first.
    scrambled = (42 ^ 0x5DEECE66D) % 2**48
    first, second = GENERATORS["java_lcg"].draws(np.array([scrambled], dtype=np.uint64), 1, 2, 2**32)[0]
    assert [int(v) - 2**32 * (v >= 2**31) for v in (first, second)] == [-1170105035, 234785527]


def test_minstd_is_cpp_minstd_rand():
    # The C++ standard: the 10000th draw of a default-constructed (seed 1) std::minstd_rand is 399268537.
    assert GENERATORS["minstd"].draws(np.array([1]), 10000, 1, 2**31)[0, 0] == 399268537


def test_negative_int64_seeds_are_taken_mod_2_64():
    gen = GENERATORS["java_lcg"]
    assert gen.draws(np.array([-1], dtype=np.int64), 1, 5, 1000)[0].tolist() == reference(gen, 2**64 - 1, 1, 5, 1000)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("skip", [1, 2, 999, 4096, 12345])
def test_jump_ahead_equals_stepping(name, skip):
    gen = GENERATORS[name]
    stepped = gen.draws(SEEDS, 1, skip + 50, 2**32)
    assert np.array_equal(gen.draws(SEEDS, skip + 1, 50, 2**32), stepped[:, skip:])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_far_jumps_compose_and_close_the_period(name):
    gen = GENERATORS[name]
    a, b = 3**30, 2**45 + 17
    assert np.array_equal(gen.advance(gen.advance(SEEDS, a), b), gen.advance(SEEDS, a + b))
    period = gen.modulus if gen.increment else gen.modulus - 1  # full-period LCG; minstd's prime modulus
    assert np.array_equal(gen.advance(SEEDS, period), gen.advance(SEEDS, 0))
    assert not np.array_equal(gen.advance(SEEDS, period // 2), gen.advance(SEEDS, 0))


def test_advance_makes_lag_shifted_copies():
    gen = GENERATORS["java_lcg"]
    assert np.array_equal(gen.draws(gen.advance(SEEDS, 7), 1, 20, 1000), gen.draws(SEEDS, 8, 20, 1000))


def test_unknown_prng_names_the_field():
    with pytest.raises(ContractError) as err:
        get_generator("mersenne_twister", "jobs/s/trial_0000.json")
    assert (err.value.source, err.value.field) == ("jobs/s/trial_0000.json", "prng.type")
    assert "java_lcg" in err.value.problem


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_per_seed_starts_and_strides_forward_and_back(name):
    """outputs() with a start and a stride of its own per seed, negative ones included (the inverse map),
    against stepping one state at a time."""
    gen = GENERATORS[name]
    rng = np.random.default_rng(11)
    start, stride = rng.integers(-400, 400, len(SEEDS)), rng.integers(-6, 7, len(SEEDS))
    got = gen.outputs(SEEDS, start, stride, 25, 1000)
    inverse = pow(gen.multiplier, -1, gen.modulus)
    for i, seed in enumerate(SEEDS):
        state = gen.states(np.array([seed]))[0].item()
        want, at = [], 0
        for t in range(25):
            step = int(start[i] + stride[i] * t)
            for _ in range(abs(step - at)):
                state = ((gen.multiplier * state + gen.increment) if step > at else inverse * (state - gen.increment)) \
                    % gen.modulus
            at = step
            want.append((state >> gen.shift) % 1000)
        assert got[i].tolist() == want
    assert np.array_equal(gen.advance(gen.advance(SEEDS, start), -start), gen.advance(SEEDS, 0))
