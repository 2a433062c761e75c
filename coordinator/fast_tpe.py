"""An exact, faster TPE ask for the study's sampler (used only by coordinator/study.py).

At 1,000 trials most of a TPE ask repeats the previous ask's work. It rebuilds every finished trial's
internal representation and infeasibility score, and re-intersects the search space from the oldest
trial in flight. It evaluates truncated-Gaussian masses (the integer parameters' kernels, every kernel's
normaliser) through a scalar Python function per element, behind a cache far too small to keep them. It
ranks the trials, and takes the log of the normal CDF (sampling's inverse CDF runs it about 1,500 times
an ask), through a Python call per element. `FastTPESampler` keeps what each finished trial contributes
(its row in one table, its part of the search space), its Parzen estimators look masses up in caches of
the ones computed before and compute the missing ones in a few shared calls (while a side has under 100
kernels, Optuna's least bandwidth shrinks with each new one, so most of an ask's masses are new; from
100 on nearly all are found), and it replaces Optuna's split and log-CDF functions (its asymptotic
series included), for the process, with whole-array versions. Every float is computed by the same
operations in the same order as in Optuna, so the suggestions are bit-identical to TPESampler's
(tests/test_fast_tpe.py).

This reaches into private parts of Optuna 5.0's TPE, and so do the ask processes' proposals
(coordinator/ask_pool.py). Their source is fingerprinted: on an Optuna whose code there is not the code
checked here, `make_tpe` returns the plain TPESampler (slower, the same suggestions) and the study asks
with Optuna's own `study.ask`.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.samplers._tpe import _erf, _truncnorm, parzen_estimator, probability_distributions
from optuna.samplers._tpe import sampler as tpe_sampler
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.probability_distributions import _BatchedCategoricalDistributions
from optuna.search_space import intersection
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

TPE = optuna.samplers.TPESampler
# What the fast path relies on: the Parzen estimator, its mixture's log-density and the truncated-normal
# functions it reproduces (whole modules), the sampler's code around the representation, the split and
# the search space it intersects;
# what a proposal made without a trial relies on: the sampling steps of an ask and their callers, and
# where the sampler keeps its random states (seeded per proposal); and what its freshness relies on
# (coordinator/ask_pool.py): the split and its size.
CHECKED_SOURCES = (probability_distributions, parzen_estimator, _truncnorm, _erf, TPE._get_internal_repr,
                   TPE._get_params, TPE._build_parzen_estimator, TPE._compute_acquisition_func, TPE._sample,
                   tpe_sampler._split_trials, tpe_sampler._split_complete_trials_single_objective,
                   tpe_sampler.default_gamma, tpe_sampler._get_infeasible_trial_score, TPE.sample_relative,
                   TPE._sample_relative, TPE.sample_independent, TPE.infer_relative_search_space, intersection,
                   optuna.trial.Trial._suggest,
                   optuna.trial.Trial._is_relative_param, optuna.Study._get_trials, TPE.__init__,
                   optuna.samplers.RandomSampler, LazyRandomState, FrozenTrial)
CHECKED_FINGERPRINT = "1601420c5b3ed947"


def fingerprint() -> str | None:
    """A digest of the checked Optuna source; None where it cannot be read."""
    digest = hashlib.sha256()
    try:
        for obj in CHECKED_SOURCES:
            digest.update(inspect.getsource(obj).encode())
    except (OSError, TypeError):
        return None
    return digest.hexdigest()[:16]


ACTIVE = fingerprint() == CHECKED_FINGERPRINT
gamma = tpe_sampler.default_gamma  # the size of the split's "below" for the study's sampler (it sets no gamma)


def make_tpe(**settings: Any) -> TPE:
    """TPESampler(**settings), fast where the installed Optuna is the one checked."""
    return (FastTPESampler if ACTIVE else TPE)(**settings)


_infeasible_score = tpe_sampler._get_infeasible_trial_score
_finished_scores: dict[int, tuple[FrozenTrial, float]] = {}
SCORES_KEPT = 1 << 17


def _kept_infeasible_score(trial: FrozenTrial) -> float:
    """Optuna's infeasibility score of a trial, remembered for finished trials (which never change).
    `_split_trials` calls it for every trial at every ask; it is Optuna's module function, so it is
    replaced for the process (by FastTPESampler), with the same values."""
    kept = _finished_scores.get(id(trial))
    if kept is not None and kept[0] is trial:
        return kept[1]
    score = _infeasible_score(trial)
    if trial.state.is_finished():
        if len(_finished_scores) >= SCORES_KEPT:
            _finished_scores.clear()
        _finished_scores[id(trial)] = (trial, score)
    return score


_optuna_log_ndtr = _truncnorm._log_ndtr
_libm_erf, _libm_erfc, _libm_log = (np.frompyfunc(f, 1, 1) for f in (math.erf, math.erfc, math.log))  # per element


def _ndtr_each(a: np.ndarray) -> np.ndarray:
    """`_truncnorm._ndtr_single` per element: the same libm calls and float operations, in the same order."""
    x = a / 2**0.5
    y = np.empty_like(x)
    left = x < -1 / 2**0.5
    central = ~left & (x < 1 / 2**0.5)
    right = ~(left | central)
    y[left] = 0.5 * _libm_erfc(-x[left]).astype(float)
    y[central] = 0.5 + 0.5 * _libm_erf(x[central]).astype(float)
    y[right] = 1.0 - 0.5 * _libm_erfc(x[right]).astype(float)
    return y


def _log_ndtr(a: np.ndarray) -> np.ndarray:
    """`_truncnorm._log_ndtr`, bit for bit, without a Python function call per element: Optuna maps its
    scalar `_log_ndtr_single` over the array (about 1,500 calls a proposal at 1,000 trials). Here its two
    common branches (a > -20) are whole-array operations, with math.erf, math.erfc and math.log applied
    per element as there; so is its asymptotic series (a <= -20). NaN stays Optuna's scalar function.
    Replaced for the process (by FastTPESampler), as `_get_infeasible_trial_score` is."""
    a = np.asarray(a, dtype=float)
    out = np.empty(a.shape)
    high = a > 6
    central = ~high & (a > -20)
    series = a <= -20
    rest = ~(high | central | series)
    out[high] = -_ndtr_each(-a[high])
    out[central] = _libm_log(_ndtr_each(a[central])).astype(float)
    out[series] = _log_ndtr_series(a[series])
    out[rest] = [_truncnorm._log_ndtr_single(value) for value in a[rest].tolist()]
    return out


_libm_square = np.frompyfunc(lambda value: value**2, 1, 1)  # Python's float power, as Optuna's a**2


def _log_ndtr_series(a: np.ndarray) -> np.ndarray:
    """`_truncnorm._log_ndtr_single`'s asymptotic series for a <= -20, its loop run for all the values
    at once: each value takes the same float operations in the same order, and leaves the loop at the
    iteration its own loop would (all start together, so the iteration's count and sign are shared)."""
    square = _libm_square(a).astype(float)
    log_lhs = -0.5 * square - _libm_log(-a).astype(float) - 0.5 * math.log(2 * math.pi)
    last, total, numerator, factor = np.zeros_like(a), np.ones_like(a), np.ones_like(a), np.ones_like(a)
    step = 1 / square
    sign, i = 1, 0
    going = np.abs(last - total) > sys.float_info.epsilon
    while going.any():
        i += 1
        sign = -sign
        last[going] = total[going]
        factor[going] *= step[going]
        numerator[going] *= 2 * i - 1
        total[going] += sign * numerator[going] * factor[going]
        going &= np.abs(last - total) > sys.float_info.epsilon
    return log_lhs + _libm_log(total).astype(float)


_optuna_split_trials = tpe_sampler._split_trials


def _split_trials(study: optuna.Study, trials: list[FrozenTrial], n_below: int) -> tuple[list[FrozenTrial],
                                                                                           list[FrozenTrial]]:
    """Optuna's `_split_trials`, the same two lists, for a study of one objective whose trials are all
    feasible and COMPLETE or RUNNING (Step 2's); Optuna's own function for any other. Optuna sorts the
    completed trials by value (stably: ties keep their order), takes the first `n_below` as "below", and
    sorts both sides by number (unique): so below is the stable ranking's first `n_below` in number
    order, and above every other trial in number order. Here that is one numpy ranking and plain
    attribute reads instead of three sorts through per-trial key functions. Replaced for the process (by
    FastTPESampler), as `_get_infeasible_trial_score` is."""
    states = [trial.state for trial in trials]
    if (len(study.directions) != 1
            or states.count(TrialState.COMPLETE) + states.count(TrialState.RUNNING) != len(trials)):
        return _optuna_split_trials(study, trials, n_below)
    complete = [i for i, state in enumerate(states) if state is TrialState.COMPLETE]
    if (any(trials[i]._system_attrs for i in complete)  # constraints live there: score them
            and any(_kept_infeasible_score(trials[i]) > 0 for i in complete)):
        return _optuna_split_trials(study, trials, n_below)
    values = np.array([trials[i]._values[0] for i in complete], dtype=float)  # FrozenTrial.value, one objective
    if np.isnan(values).any():  # where Optuna's ranking rests on how sorted() meets a NaN
        return _optuna_split_trials(study, trials, n_below)
    ranked = np.argsort(values if study.direction == StudyDirection.MINIMIZE else -values, kind="stable")
    below = np.zeros(len(trials), dtype=bool)
    below[np.asarray(complete, dtype=np.intp)[ranked[:min(n_below, len(complete))]]] = True  # as Optuna slices
    numbers = [trial._number for trial in trials]  # FrozenTrial.number
    order = range(len(trials)) if numbers == sorted(numbers) else np.argsort(numbers).tolist()
    low = below.tolist()
    return [trials[i] for i in order if low[i]], [trials[i] for i in order if not low[i]]


class _FoldedIntersection:
    """`IntersectionSearchSpace(include_pruned=True)`, as TPESampler keeps it: the parameters whose
    distribution is the same in every COMPLETE or PRUNED trial, sorted by name. Optuna's re-intersects
    every trial from the oldest running one at each ask (about the 26 in flight, a dozen distribution
    comparisons each); this folds each finished trial in once, so an ask folds the one or two that
    finished since. The distributions are shared, not copied: nothing in a TPE ask changes them."""

    FOLDED = (TrialState.COMPLETE, TrialState.PRUNED)
    OPEN = (TrialState.RUNNING, TrialState.WAITING)

    def __init__(self) -> None:
        self._space: dict[str, BaseDistribution] | None = None
        self._folded: set[int] = set()
        self._scan_from = -1  # every trial numbered below it was scanned when no longer open
        self._study_id: int | None = None

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> dict[str, BaseDistribution]:
        if self._study_id not in (None, study._study_id):
            raise ValueError("`IntersectionSearchSpace` cannot handle multiple studies.")
        self._study_id = study._study_id
        trials = study._get_trials(deepcopy=False, use_cache=use_cache)
        scan_from = trials[-1].number + 1 if trials else -1
        for trial in reversed(trials):
            if trial.number < self._scan_from:
                break
            if trial.state in self.OPEN:
                scan_from = trial.number
            elif trial.state in self.FOLDED and trial._trial_id not in self._folded:
                self._folded.add(trial._trial_id)
                dists = trial.distributions
                self._space = (dict(dists) if self._space is None else
                               {name: dist for name, dist in self._space.items() if dists.get(name) == dist})
        self._scan_from = scan_from
        return dict(sorted((self._space or {}).items()))


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    keys = np.empty(a.size, dtype=complex)
    keys.real, keys.imag = a.ravel(), b.ravel()
    return keys


class _MassCache:
    """`_truncnorm._log_gauss_mass(a, b)` for arrays of (a, b), remembered across asks. The function is
    elementwise, so a value computed in one call is the value any later call would compute. Lookups are
    vectorised: (a, b) as a complex key in a large sorted array, and a small one for recent keys, merged
    into it when full. Pairs with a NaN are computed, never stored. Before those, the keys the latest
    calls began with are taken as they were: an ask's "above" is the previous one's, in the same
    order, with a kernel or two more before the prior's."""

    RECENT = 4096
    LIMIT = 1 << 19  # keys kept (about 12 MB); then it starts afresh
    LAST = 2  # calls remembered whole: an ask's "below" and "above"

    def __init__(self) -> None:
        empty = np.empty(0, dtype=complex), np.empty(0)
        self._tiers = [empty, empty]  # (sorted keys, values): the large one, the recent one
        self._last: list[tuple[np.ndarray, np.ndarray]] = []  # (keys, values) of the latest calls

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The masses, as a read-only array (a call's values are kept for the next)."""
        keys = _pair_keys(a, b)
        out = np.empty(keys.size)
        start = 0
        for last_keys, last_values in self._last:
            n = min(keys.size, last_keys.size)
            same = keys[:n] == last_keys[:n]
            common = n if same.all() else int(same.argmin())
            if common > start:
                start, out[:common] = common, last_values[:common]
        missing = np.arange(start, keys.size)
        for tier_keys, tier_values in self._tiers:
            found = self._find(tier_keys, keys[missing])
            out[missing[found >= 0]] = tier_values[found[found >= 0]]
            missing = missing[found < 0]
        if missing.size:
            new, where = np.unique(keys[missing], return_inverse=True)
            values = _truncnorm._log_gauss_mass(new.real, new.imag)
            out[missing] = values[where]
            keep = ~np.isnan(new)
            self._remember(new[keep], values[keep])
        out.flags.writeable = False
        self._last = [(keys, out), *self._last][:self.LAST]
        return out.reshape(a.shape)

    @staticmethod
    def _find(tier_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Each key's index in the sorted tier, or -1."""
        if not tier_keys.size:
            return np.full(keys.size, -1)
        at = np.minimum(np.searchsorted(tier_keys, keys), tier_keys.size - 1)
        return np.where(tier_keys[at] == keys, at, -1)

    def _remember(self, keys: np.ndarray, values: np.ndarray) -> None:
        (big_keys, big_values), (recent_keys, recent_values) = self._tiers
        keys, values = np.concatenate([recent_keys, keys]), np.concatenate([recent_values, values])
        order = np.argsort(keys)
        self._tiers[1] = keys[order], values[order]
        if keys.size >= self.RECENT:
            if big_keys.size + keys.size > self.LIMIT:
                big_keys, big_values = big_keys[:0], big_values[:0]
            merged_keys, merged_values = np.concatenate([big_keys, keys]), np.concatenate([big_values, values])
            order = np.argsort(merged_keys)
            self._tiers = [(merged_keys[order], merged_values[order]), (keys[:0], values[:0])]


class _GridMasses:
    """The Gaussian masses of an integer parameter's kernels (integer bounds and step, no log), in
    tables kept across asks. Its samples are integers and its kernels' means integers or, for the
    prior, a half-integer, so Optuna's `(x - step/2 - mu) / sigma` is exact up to the one division by
    sigma: kernel k's log mass over a sample's step depends on (x - mu_k, sigma_k) alone, and its mass
    over the whole range on (mu_k - low, sigma_k). A kernel's sigma is one of a few values (clipped
    gaps between neighbours), so the tables have a row per sigma and a column per half-step offset.
    Entries are `_truncnorm._log_gauss_mass` of the same floats as Optuna's, computed when first
    needed (NaN until then)."""

    MAX_ROWS = 256  # distinct sigmas kept; then the tables start afresh

    def __init__(self, low: int, high: int, step: int):
        self.low, self.high, self.step = low, high, step
        self.reach = 2 * (high - low)  # the largest |2 (x - mu)|
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[float, int] = {}
        self._sigma = np.empty(0)  # each row's
        self._mass = np.full((8, 2 * self.reach + 1), np.nan)  # column: 2 (x - mu) + reach
        self._norm = np.full((8, self.reach + 1), np.nan)  # column: 2 (mu - low)

    def entries(self, x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> tuple[_Entries, _Entries] | None:
        """Each kernel's log mass over each sample's step, and its log mass over the range, as table entries
        (`_compute` fills those not computed yet); None unless the samples and the means are on the grid
        this relies on."""
        x_int, twice_mu = _integers(x, self.low, self.high), _integers(2 * mu, 2 * self.low, 2 * self.high)
        if x_int is None or twice_mu is None:
            return None
        rows = self._rows_of(sigma)
        # Flat indices into the tables: 2 (x - mu) is exact, so it is the difference of the integers.
        mass = _Entries(self._mass, self._sigma, 2 * x_int[:, None] + (rows * self._mass.shape[1] + self.reach
                                                                       - twice_mu),
                        lambda cols: (cols - self.reach - self.step) / 2,
                        lambda cols: (cols - self.reach + self.step) / 2)
        norm = _Entries(self._norm, self._sigma, rows * self._norm.shape[1] + twice_mu - 2 * self.low,
                        lambda cols: -(cols + self.step) / 2, lambda cols: (self.reach - cols + self.step) / 2)
        return mass, norm

    def _rows_of(self, sigma: np.ndarray) -> np.ndarray:
        """Each kernel's row, adding rows for sigmas not seen before. Usually every sigma has its row
        already: then they are looked up in the few rows' sigmas, sorted."""
        if self._sigma.size:
            order = np.argsort(self._sigma)
            known = self._sigma[order]
            at = np.minimum(np.searchsorted(known, sigma), known.size - 1)
            if np.array_equal(known[at], sigma):
                return order[at]
        sigmas, sigma_of = np.unique(sigma, return_inverse=True)
        if len(self._rows) + len(sigmas) > self.MAX_ROWS:
            self._clear()
        return np.array([self._row(value) for value in sigmas])[sigma_of]

    def _row(self, sigma: float) -> int:
        row = self._rows.get(sigma)
        if row is None:
            row = self._rows[sigma] = len(self._rows)
            self._sigma = np.append(self._sigma, sigma)
            if row == len(self._mass):  # twice the rows: under 100 kernels an ask brings new sigmas
                self._mass, self._norm = (np.vstack([t, np.full_like(t, np.nan)]) for t in (self._mass, self._norm))
        return row


_NONE = np.empty(0)


class _Entries:
    """The entries of one mass table at flat indices, with the (a, b) of those not computed yet: the exact
    numerators left(col) and right(col) of their interval's ends, divided by their row's sigma. The table
    and its sigmas are the ones the indices point into, even if the grid replaces them meanwhile."""

    def __init__(self, table: np.ndarray, sigma: np.ndarray, index: np.ndarray, left: Any, right: Any):
        self._flat, self._index = table.reshape(-1), index
        self._values = self._flat.take(index)
        missing = np.isnan(self._values)
        self.a = self.b = _NONE
        if missing.any():
            self._pairs = np.unique(index[missing])
            rows, cols = np.divmod(self._pairs, table.shape[1])
            self.a, self.b = left(cols) / sigma[rows], right(cols) / sigma[rows]

    def fill(self, masses: np.ndarray) -> None:
        self._flat[self._pairs] = masses
        self._values = self._flat.take(self._index)

    def values(self) -> np.ndarray:
        return self._values


ERF_EXACT_BELOW = 2000  # _erf.erf (fingerprinted): math.erf per element below this many values, a polynomial from there


def _compute(entries: list[_Entries]) -> None:
    """Fill the entries not computed yet, in as few calls of `_truncnorm._log_gauss_mass` as the values
    allow (each call costs a few dozen numpy operations beyond its elements). The function is elementwise except in one
    respect: its central case takes `_erf.erf` of all its central values at once, exactly per element
    below ERF_EXACT_BELOW values and by a polynomial from there. So entries whose own central values
    are that many are computed alone, as a call of their own would, and the others are packed into
    calls with fewer central values than that, where each value is what its own call would give."""
    batches: list[list[_Entries]] = []
    central = ERF_EXACT_BELOW  # in the last batch
    for entry in (e for e in entries if e.a.size):
        count = int(np.count_nonzero(~((entry.b <= 0) | (entry.a > 0))))  # as _log_gauss_mass splits its cases
        if central + count >= ERF_EXACT_BELOW:
            batches.append([])
            central = 0
        batches[-1].append(entry)
        central += count
    for batch in batches:
        masses = _truncnorm._log_gauss_mass(np.concatenate([e.a for e in batch]), np.concatenate([e.b for e in batch]))
        for entry, part in zip(batch, np.split(masses, np.cumsum([e.a.size for e in batch[:-1]])), strict=True):
            entry.fill(part)


def _integers(values: np.ndarray, low: int, high: int) -> np.ndarray | None:
    """The values as integers, or None unless they all are integers within [low, high]."""
    with np.errstate(invalid="ignore"):  # NaN or infinite: no integer, refused below
        ints = values.astype(np.intp)
    if not (np.array_equal(ints, values) and ints.min() >= low and ints.max() <= high):
        return None
    return ints


def _grid_key(dist: Any) -> tuple[int, int, int] | None:
    """An integer parameter's (low, high, step), or None where the grid tables do not apply."""
    bounds = (dist.low, dist.high, dist.step)
    if dist.is_log or not all(float(b).is_integer() for b in bounds):
        return None
    return int(dist.low), int(dist.high), int(dist.step)


class _CachedParzenEstimator(_ParzenEstimator):
    """Optuna's Parzen estimator whose log-density takes its Gaussian masses from caches shared across
    asks. It computes what `_MixtureOfProductDistribution.log_pdf` computes, term by term in the same
    order. Where a precondition of the caches fails (a log-scaled or fractional step, a sample outside
    a kernel's bounds, where Optuna substitutes -inf), the whole log-density is Optuna's."""

    def __init__(self, observations: dict[str, np.ndarray], search_space: dict[str, BaseDistribution],
                 parameters: _ParzenEstimatorParameters, predetermined_weights: np.ndarray | None = None, *,
                 masses: _MassCache, grids: dict[tuple[int, int, int], _GridMasses]):
        super().__init__(observations, search_space, parameters, predetermined_weights)
        self._masses, self._grids = masses, grids

    def log_pdf(self, samples_dict: dict[str, np.ndarray]) -> np.ndarray:
        x = self._transform(samples_dict)
        mixture = self._mixture_distribution
        terms: list[np.ndarray | tuple[_Entries, _Entries]] = []  # added to the total in the parameters' order
        continuous = []
        for i, dist in enumerate(mixture.distributions):
            if isinstance(dist, _BatchedCategoricalDistributions):
                terms.append(np.log(dist.weights)[:, x[:, i].astype(np.int64)].T)
            elif dist.step == 0.0:
                continuous.append((x[:, i], dist))
            else:
                entries = self._grid_entries(x[:, i], dist)
                if entries is None:
                    return mixture.log_pdf(x)
                terms.append(entries)
        _compute([entry for term in terms if isinstance(term, tuple) for entry in term])
        total = np.zeros((len(x), len(mixture.weights)))
        for term in terms:
            if isinstance(term, tuple):
                mass, norm = term
                total += mass.values()
                total -= norm.values()
            else:
                total += term
        if continuous and not self._add_continuous(total, continuous):
            return mixture.log_pdf(x)
        total += np.log(mixture.weights)
        top = total.max(axis=1)
        top[np.isneginf(top)] = 0
        with np.errstate(divide="ignore"):
            return np.log(np.exp(total - top[:, None]).sum(axis=1)) + top

    def _grid_entries(self, x: np.ndarray, dist: Any) -> tuple[_Entries, _Entries] | None:
        key = _grid_key(dist)
        if key is None:
            return None
        if key not in self._grids:
            self._grids[key] = _GridMasses(*key)
        return self._grids[key].entries(x, dist.mu, dist.sigma)

    def _add_continuous(self, total: np.ndarray, continuous: list[tuple[np.ndarray, Any]]) -> bool:
        """The truncated-normal log-densities of the continuous parameters, summed; False (nothing added)
        where a sample lies outside its bounds or a kernel has none."""
        x = np.stack([np.log(xi) if d.is_log else xi for xi, d in continuous], axis=-1)
        low = np.array([d.adapted_low for _, d in continuous])
        high = np.array([d.adapted_high for _, d in continuous])
        mu = np.stack([d.mu for _, d in continuous], axis=-1)
        sigma = np.stack([d.sigma for _, d in continuous], axis=-1)
        a, b = (low - mu) / sigma, (high - mu) / sigma
        if not (np.all(x >= low) and np.all(x <= high)) or np.any(a == b):
            return False
        z = (x[:, None, :] - mu) / sigma  # within [a, b]: division by a positive sigma keeps the order
        total += (_truncnorm._norm_logpdf(z) - self._masses(a, b) - np.log(sigma)).sum(axis=-1)
        return True


class FastTPESampler(TPE):
    """TPESampler with the same constructor and the same suggestions: a finished trial's internal
    representation is computed once (a finished FrozenTrial never changes: the journal replay and the
    in-memory storage refuse updates to it), and Gaussian masses come from caches kept across asks.
    Running trials are read afresh at every ask, since their parameters can still change. One ask at a
    time: the study asks under its lock, an ask process has one thread."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        tpe_sampler._get_infeasible_trial_score = _kept_infeasible_score
        tpe_sampler._split_trials = _split_trials
        _truncnorm._log_ndtr = _log_ndtr
        self._masses = _MassCache()
        self._grids: dict[tuple[int, int, int], _GridMasses] = {}
        self._parzen_estimator_cls = self._estimator
        self._search_space = _FoldedIntersection()  # type: ignore[assignment]
        self._rows: _Rows | None = None

    def seed_draw(self, seed: int) -> None:
        """Seed the random states of the next suggestion: TPE's own and its random sampler's (startup
        trials, parameters outside the joint space)."""
        self._rng.rng.seed(seed)
        self._random_sampler._rng.rng.seed(seed)

    def _estimator(self, *args: Any) -> _CachedParzenEstimator:
        return _CachedParzenEstimator(*args, masses=self._masses, grids=self._grids)

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: optuna.Study) -> dict[str, np.ndarray]:
        """The values TPESampler._get_internal_repr gives, as float64 columns (categorical indices are
        small integers, exact in a float; the estimator turns every column into float64 anyway)."""
        space = tuple(search_space.items())
        if self._rows is None or self._rows.space != space:
            self._rows = _Rows(space)
        table = self._rows.table(trials, lambda trial: self._get_params(trial, study))
        return {name: table[:, j] for j, (name, _) in enumerate(space)}


class _Rows:
    """Trials' internal representations over one search space, one row each: a finished trial's kept in a
    growing table (a finished FrozenTrial never changes), a running one's read afresh."""

    def __init__(self, space: tuple[tuple[str, BaseDistribution], ...]):
        self.space = space
        self._at: dict[int, tuple[FrozenTrial, int | None]] = {}  # trial id: the trial, its row (None: outside)
        self._kept = np.empty((64, len(space)))
        self._used = 0

    def table(self, trials: list[FrozenTrial], params_of: Callable[[FrozenTrial], dict[str, Any]]) -> np.ndarray:
        """The rows of the trials whose parameters cover the space, in the trials' order."""
        index, running = [], []
        for trial in trials:
            kept = self._at.get(trial._trial_id)
            if kept is not None and kept[0] is trial:
                at = kept[1]
            else:
                row = self._row(params_of(trial))
                if trial.state.is_finished():
                    at = None if row is None else self._keep(row)
                    self._at[trial._trial_id] = (trial, at)
                elif row is not None:
                    running.append(row)
                    at = -len(running)  # the running rows follow the kept ones
                else:
                    at = None
            if at is not None:
                index.append(at)
        rows = np.asarray(index, dtype=np.intp)
        rows[rows < 0] = self._used - 1 - rows[rows < 0]
        table = np.concatenate([self._kept[:self._used], np.array(running, dtype=float).reshape(-1, len(self.space))])
        return table.take(rows, axis=0)

    def _row(self, params: dict[str, Any]) -> tuple[float, ...] | None:
        if not all(name in params for name, _ in self.space):
            return None
        return tuple(dist.to_internal_repr(params[name]) for name, dist in self.space)

    def _keep(self, row: tuple[float, ...]) -> int:
        if self._used == len(self._kept):
            self._kept = np.concatenate([self._kept, np.empty_like(self._kept)])
        self._kept[self._used] = row
        self._used += 1
        return self._used - 1
