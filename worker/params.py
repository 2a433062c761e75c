"""The Step 2 search space: the scorer's and the network's trial parameters, defined once.

The coordinator turns it into Optuna distributions (coordinator/study.py); the worker validates every
job against it, so a parameter can neither be missing nor silently defaulted; `random_params` draws
from it for the benchmarks and tests. Each dimension checks and samples its own values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.contract import ContractError


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def check(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def check(self, value: Any) -> bool:
        return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                and self.low <= value <= self.high)

    def sample(self, rng: np.random.Generator) -> float:
        """Uniform, in the log for a log range."""
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def check(self, value: Any) -> bool:
        return value in self.options and type(value) in {type(o) for o in self.options}

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]


Dimension = IntRange | FloatRange | Choice

SCORER_SPACE: dict[str, Dimension] = {
    "residue_mod_1": IntRange(5, 20),
    "residue_mod_2": IntRange(50, 150),
    "residue_mod_3": IntRange(500, 1000),
    "max_offset": IntRange(0, 15),
    "temporal_window_size": IntRange(50, 200),
    "temporal_num_windows": IntRange(3, 10),
    "min_confidence_threshold": FloatRange(0.001, 0.5, log=True),
}

MODEL_SPACE: dict[str, Dimension] = {
    "hidden_layers": Choice(("64_32", "128_64", "256_128_64")),
    "dropout": FloatRange(0.0, 0.5),
    "learning_rate": FloatRange(1e-4, 1e-2, log=True),
    "batch_size": Choice((32, 64, 128)),
}

SEARCH_SPACE: dict[str, Dimension] = {**SCORER_SPACE, **MODEL_SPACE}


def validate_params(params: dict[str, Any], source: str = "<job>") -> dict[str, Any]:
    """Every search-space parameter present and in range; unknown keys refused."""
    for name, dim in SEARCH_SPACE.items():
        if name not in params:
            raise ContractError(source, f"params.{name}", "is missing")
        if not dim.check(params[name]):
            raise ContractError(source, f"params.{name}", f"{params[name]!r} is outside {dim}")
    unknown = set(params) - set(SEARCH_SPACE) - {"optuna_trial_number"}
    if unknown:
        raise ContractError(source, f"params.{sorted(unknown)[0]}", "is not a Step 2 parameter")
    return params


def random_params(rng: np.random.Generator) -> dict[str, Any]:
    """One parameter set drawn uniformly from the search space (log ranges uniformly in the log)."""
    return {name: dim.sample(rng) for name, dim in SEARCH_SPACE.items()}
