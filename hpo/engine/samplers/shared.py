"""One surrogate over every trial of a layer-wise search (block-coordinate Bayesian optimization).

A stage's own sampler sees only the stage's trials, taken while the other stages sat at
their ledger values or defaults. :class:`SharedGPSampler` instead fits one Gaussian
process on the *full* parameter vector of every trial of the search: the trials of the
earlier stage studies (each trial's own parameters plus the values its stage held fixed,
``hpo:fixed``) and those of the current stage. The acquisition then moves only the
active stage's parameters, with every other parameter held at its current value. So a
stage starts modelling with everything the search has measured (the refine stage and
later passes start warm), and the model is joint: what one stage learned about the
others' parameters is not thrown away.

The GP is small and plain numpy: Matern-5/2 with one length scale per parameter
(categoricals by a 0/1 distance), the kernel parameters fitted by L-BFGS-B on the
marginal likelihood with the priors of Optuna's ``GPSampler``, and log expected
improvement maximized by random and local candidate search over the active parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize
from scipy.special import erfcx
from threadpoolctl import threadpool_limits

History = Callable[[], Sequence[tuple[Mapping[str, Any], float]]]
"""Returns ``(full params, value)`` of the trials outside the current stage study."""

_MIN_NOISE = 1e-6
_SQRT5 = math.sqrt(5.0)


@dataclass
class SurrogateTimes:
    """Seconds spent in the shared surrogate, summed over every sampler of the process.

    Benchmarks read it to report the surrogate's cost apart from the engine's.

    Attributes:
        fit: Kernel-parameter fitting (marginal-likelihood optimization).
        acquisition: Candidate search on the acquisition function.
        history: Reading the other stage studies' trials from the storage.
        calls: Proposals made.
    """

    fit: float = 0.0
    acquisition: float = 0.0
    history: float = 0.0
    calls: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        self.fit = self.acquisition = self.history = 0.0
        self.calls = 0


TIMES = SurrogateTimes()


# ------------------------------------------------------------------------ encoding


@dataclass(frozen=True)
class _Encoding:
    """The full search space as numbers: numeric parameters in [0, 1], categoricals as index."""

    space: Mapping[str, BaseDistribution]
    names: tuple[str, ...] = field(init=False)
    is_cat: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.space))
        object.__setattr__(
            self,
            "is_cat",
            np.array([isinstance(d, CategoricalDistribution) for d in self.space.values()]),
        )

    def one(self, name: str, value: Any) -> float:
        """One parameter's value in model coordinates."""
        dist = self.space[name]
        if isinstance(dist, CategoricalDistribution):
            return float(dist.to_internal_repr(value))
        low, high, x = float(dist.low), float(dist.high), float(value)
        if dist.log:
            low, high, x = math.log(low), math.log(high), math.log(x)
        return 0.5 if high == low else (x - low) / (high - low)

    def row(self, params: Mapping[str, Any]) -> np.ndarray | None:
        """A full parameter vector, or ``None`` when a parameter is missing or out of range."""
        try:
            out = np.array([self.one(n, params[n]) for n in self.names])
        except (KeyError, ValueError, TypeError):
            return None
        numeric = out[~self.is_cat]
        if np.any(numeric < -1e-9) or np.any(numeric > 1 + 1e-9):
            return None  # a value outside the declared range (a changed spec): not modelled
        return out

    def decode(self, name: str, u: float) -> Any:
        """Model coordinates back to the parameter's value (ints rounded, in range)."""
        dist = self.space[name]
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(round(u))]
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            x = low + u * (high - low)
        step = getattr(dist, "step", None)
        if step is not None:
            x = low + round((x - low) / step) * step
        x = min(max(x, low), high)
        return int(round(x)) if isinstance(dist, IntDistribution) else float(x)


# ------------------------------------------------------------------------------ GP


def _matern(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matern-5/2 of a squared scaled distance, and its derivative in ``z``."""
    r = np.sqrt(np.maximum(z, 0.0))
    e = np.exp(-_SQRT5 * r)
    return (1 + _SQRT5 * r + 5.0 / 3.0 * z) * e, -5.0 / 6.0 * (1 + _SQRT5 * r) * e


def _sq_diffs(a: np.ndarray, b: np.ndarray, is_cat: np.ndarray) -> np.ndarray:
    """Per-parameter squared differences ``(len(a), len(b), d)``; categoricals 0 or 1."""
    diff = a[:, None, :] - b[None, :, :]
    sq = diff * diff
    if is_cat.any():
        sq[..., is_cat] = (sq[..., is_cat] > 0).astype(float)
    return sq


class _GP:
    """Matern-5/2 ARD Gaussian process on standardized values (minimization)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, is_cat: np.ndarray) -> None:
        self.x, self.is_cat = x, is_cat
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        self.y = (y - self.mean) / self.std
        self.sq = _sq_diffs(x, x, is_cat)
        d = x.shape[1]
        self.raw = np.concatenate([np.zeros(d), [0.0, math.log(1e-2)]])

    def _unpack(self, raw: np.ndarray) -> tuple[np.ndarray, float, float]:
        d = self.x.shape[1]
        return np.exp(raw[:d]), math.exp(raw[d]), _MIN_NOISE + math.exp(raw[d + 1])

    def _loss(self, raw: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log marginal likelihood plus log prior, and its gradient."""
        rho, scale, noise = self._unpack(raw)
        n, d = len(self.y), len(rho)
        z = (self.sq.reshape(n * n, d) @ rho).reshape(n, n)
        m, dm = _matern(z)
        k = scale * m + noise * np.eye(n)
        try:
            chol = cholesky(k, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(raw)
        alpha = cho_solve((chol, True), self.y)
        k_inv = cho_solve((chol, True), np.eye(n))
        w = np.outer(alpha, alpha) - k_inv
        lml = -0.5 * self.y @ alpha - np.log(np.diag(chol)).sum()
        grad = np.empty_like(raw)
        grad[:d] = 0.5 * rho * ((w * (scale * dm)).ravel() @ self.sq.reshape(n * n, d))
        grad[d] = 0.5 * np.sum(w * (scale * m))
        grad[d + 1] = 0.5 * np.trace(w) * (noise - _MIN_NOISE)
        # Optuna GPSampler's priors: on inverse squared length scales, kernel scale
        # Gamma(2, 1), noise Gamma(1.1, 30).
        prior = -np.sum(0.1 / rho + 0.1 * rho) + (math.log(scale) - scale) + (
            0.1 * math.log(noise) - 30 * noise
        )
        grad[:d] += 0.1 / rho - 0.1 * rho
        grad[d] += 1 - scale
        grad[d + 1] += (0.1 / noise - 30) * (noise - _MIN_NOISE)
        return -(lml + prior), -grad

    def fit(self) -> np.ndarray:
        """Fit the kernel parameters by maximum a posteriori, then factorize."""
        res = minimize(self._loss, self.raw, jac=True, method="L-BFGS-B",
                       bounds=[(-12, 12)] * (len(self.raw) - 2) + [(-8, 6), (-25, 2)],
                       options={"maxiter": 200, "gtol": 1e-2})
        if np.all(np.isfinite(res.x)):
            self.raw = res.x
        self._factorize()
        return self.raw

    def _factorize(self) -> None:
        self.rho, self.scale, self.noise = self._unpack(self.raw)
        k = self.scale * _matern(self.sq @ self.rho)[0] + self.noise * np.eye(len(self.y))
        jitter = 0.0
        while True:
            try:
                self.chol = cholesky(k + jitter * np.eye(len(self.y)), lower=True)
                break
            except np.linalg.LinAlgError:
                jitter = max(1e-8, 10 * jitter)
        self.alpha = cho_solve((self.chol, True), self.y)

    def add_pending(self, x: np.ndarray) -> None:
        """Kriging believer: RUNNING points told at the posterior mean (another driver's)."""
        if not len(x):
            return
        mu, _ = self.predict(x)
        self.x = np.vstack([self.x, x])
        self.y = np.concatenate([self.y, (mu - self.mean) / self.std])
        self.sq = _sq_diffs(self.x, self.x, self.is_cat)
        self._factorize()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation in the original (minimized) units."""
        ks = self.scale * _matern(_sq_diffs(x, self.x, self.is_cat) @ self.rho)[0]
        mu = ks @ self.alpha
        v = solve_triangular(self.chol, ks.T, lower=True)
        var = np.maximum(self.scale - np.sum(v * v, axis=0), 1e-12)
        return mu * self.std + self.mean, np.sqrt(var) * self.std


def log_ei(mu: np.ndarray, sigma: np.ndarray, best: float) -> np.ndarray:
    """Log expected improvement below ``best`` (minimization), stable far in the tail."""
    z = (best - mu) / sigma
    # h(z) = phi(z) + z Phi(z) = exp(-z^2/2) (1/sqrt(2 pi) + z/2 erfcx(-z/sqrt(2)))
    inner = 1 / math.sqrt(2 * math.pi) + 0.5 * z * erfcx(-z / math.sqrt(2))
    return np.log(sigma) - 0.5 * z * z + np.log(np.maximum(inner, 1e-300))


# ------------------------------------------------------------------------- sampler


class SharedGPSampler(BaseSampler):
    """A GP over every trial of a layer-wise search; the acquisition moves one stage.

    Meant as the Bayesian phase of a :class:`~hpo.engine.samplers.phased.StageSampler`. It
    models the *full* parameter vector: the current stage study's COMPLETE trials (their
    parameters plus ``fixed``) and ``history()`` (the other stage studies' trials, read
    once from the storage, so a resumed search or a second driver models the same data).
    RUNNING trials of the stage with their parameters set are told at the posterior mean
    (kriging believer), so concurrent drivers are sent elsewhere.

    Args:
        space: Every parameter of the search with its full (declared) distribution.
        active: The parameters this stage tunes, with their (possibly narrowed) ranges.
        fixed: Values of every parameter of ``space`` outside ``active``.
        history: ``() -> [(full params, value), ...]`` of trials outside this study.
        seed: Seed of candidate search and of the fallback random sampler.
        n_candidates: Random candidates per proposal (plus local ones around the best).
    """

    def __init__(
        self,
        *,
        space: Mapping[str, BaseDistribution],
        active: Mapping[str, BaseDistribution],
        fixed: Mapping[str, Any],
        history: History | None = None,
        seed: int | None = None,
        n_candidates: int = 1024,
    ) -> None:
        missing = set(space) - set(active) - set(fixed)
        if missing:
            raise ValueError(f"no fixed value for {sorted(missing)}")
        self._enc = _Encoding(dict(space))
        self._active = dict(active)
        self._fixed = dict(fixed)
        self._history = history
        self._history_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._rng = np.random.RandomState(seed)
        self._independent_sampler = RandomSampler(seed=seed)
        self._n_candidates = n_candidates

    def reseed_rng(self) -> None:
        """Fresh random state (Optuna calls this for threads that share a sampler)."""
        self._rng = np.random.RandomState()
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The active stage's parameters that have more than one value."""
        return {k: d for k, d in self._active.items() if not d.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Maximize log EI over ``search_space`` with every other parameter held fixed.

        Returns:
            Parameter name -> value; empty (random sampling) with fewer than 2 points.
        """
        if not search_space:
            return {}
        x, y, pending = self._data(study, trial)
        if len(y) < 2 or np.ptp(y) == 0:
            return {}
        TIMES.calls += 1
        # Matrices of a few hundred rows: BLAS threads only fight other processes for the
        # cores (measured: 40 ms instead of 3 ms per likelihood on a busy 2-core machine).
        with threadpool_limits(1):
            start = time.perf_counter()
            gp = _GP(x, y, self._enc.is_cat)
            # Always from the same start (not the last fit): a proposal is then a function
            # of the stored trials and the seed only, so a resumed search or another
            # driver proposes what an uninterrupted one would.
            gp.fit()
            gp.add_pending(pending)
            TIMES.fit += time.perf_counter() - start
            start = time.perf_counter()
            params = self._maximize(gp, search_space, y)
            TIMES.acquisition += time.perf_counter() - start
        return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Parameters outside the relative space: random."""
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    # ------------------------------------------------------------------ internals

    def _sign(self, study: optuna.Study) -> float:
        return -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def _data(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model rows and minimized values of all trials, and this stage's pending rows."""
        sign = self._sign(study)
        if self._history_rows is None:
            start = time.perf_counter()
            rows, ys = [], []
            for params, value in (self._history() if self._history else ()):
                row = self._enc.row(params)
                if row is not None and value is not None and math.isfinite(value):
                    rows.append(row)
                    ys.append(sign * value)
            d = len(self._enc.names)
            self._history_rows = (np.array(rows).reshape(-1, d), np.array(ys))
            TIMES.history += time.perf_counter() - start
        rows, ys, pending = [], [], []
        for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                           TrialState.RUNNING),
                                   use_cache=False):
            if t.number == trial.number or t.user_attrs.get("hpo:copied_from"):
                continue  # a copied incumbent is a trial of an earlier study, seen there
            row = self._enc.row({**self._fixed, **t.params})
            if row is None:
                continue
            if t.state == TrialState.RUNNING:
                pending.append(row)
            elif t.value is not None and math.isfinite(t.value):
                rows.append(row)
                ys.append(sign * t.value)
        hx, hy = self._history_rows
        d = len(self._enc.names)
        x = np.vstack([hx, np.array(rows).reshape(-1, d)])
        return x, np.concatenate([hy, ys]), np.array(pending).reshape(-1, d)

    def _maximize(
        self,
        gp: _GP,
        search_space: Mapping[str, BaseDistribution],
        y: np.ndarray,
    ) -> dict[str, Any]:
        enc = self._enc
        names = list(search_space)
        cols = np.array([enc.names.index(n) for n in names])
        # Active parameters outside ``search_space`` have a single value (a refine range
        # narrowed to one choice): ``_any_value`` is that value.
        base = enc.row({**self._fixed, **{n: _any_value(d) for n, d in self._active.items()}})
        assert base is not None
        region = _Region.of(enc, search_space, self._rng)
        best = float(np.min(y))

        def score(points: np.ndarray) -> np.ndarray:
            full = np.repeat(base[None, :], len(points), axis=0)
            full[:, cols] = _snap(enc, names, points)
            mu, sd = gp.predict(full)
            return log_ei(mu, sd, best)

        # Centres for the local search: the stage's best points (other parameters at the
        # current context are the rows whose non-active values equal ``base``).
        others = np.setdiff1d(np.arange(len(enc.names)), cols)
        same = np.all(np.isclose(gp.x[: len(y)][:, others], base[others]), axis=1)
        mine = np.flatnonzero(same)
        if len(mine):
            order = mine[np.argsort(gp.y[: len(y)][mine])][:5]
            centers = region.clip(gp.x[order][:, cols].copy())
        else:
            centers = region.random(5)
        cand = np.vstack([region.random(self._n_candidates),
                          region.around(centers, self._n_candidates // 2, 0.1)])
        values = score(cand)
        for scale in (0.05, 0.02, 0.005):
            top = cand[np.argsort(-values)[:4]]
            local = region.around(top, 128, scale)
            cand = np.vstack([top, local])
            values = score(cand)
        winner = _snap(enc, names, cand[int(np.argmax(values))][None, :])[0]
        return {n: enc.decode(n, u) for n, u in zip(names, winner, strict=True)}


@dataclass
class _Region:
    """The active parameters' allowed region in model coordinates, and points in it.

    A narrowed range of the refine stage is a sub-interval / subset of the declared one.
    Categorical columns hold choice indices (``choices``); their bounds are unused.
    """

    lows: np.ndarray
    highs: np.ndarray
    choices: list[np.ndarray | None]
    rng: np.random.RandomState

    @classmethod
    def of(
        cls, enc: _Encoding, search_space: Mapping[str, BaseDistribution],
        rng: np.random.RandomState,
    ) -> _Region:
        """The region of ``search_space`` (its parameters in order) under ``enc``."""
        lows, highs, choices = [], [], []
        for n, d in search_space.items():
            if isinstance(d, CategoricalDistribution):
                full = enc.space[n]
                assert isinstance(full, CategoricalDistribution)
                choices.append(np.array([full.choices.index(c) for c in d.choices]))
                lows.append(0.0)
                highs.append(0.0)
            else:
                choices.append(None)
                lows.append(enc.one(n, d.low))
                highs.append(enc.one(n, d.high))
        return cls(np.array(lows), np.array(highs), choices, rng)

    def clip(self, points: np.ndarray) -> np.ndarray:
        """``points`` with their numeric columns clipped into the region (in place)."""
        for j, choices in enumerate(self.choices):
            if choices is None:
                points[:, j] = np.clip(points[:, j], self.lows[j], self.highs[j])
        return points

    def random(self, n: int) -> np.ndarray:
        """``n`` uniform points of the region."""
        pts = self.lows + self.rng.uniform(size=(n, len(self.choices))) * (self.highs - self.lows)
        for j, choices in enumerate(self.choices):
            if choices is not None:
                pts[:, j] = self.rng.choice(choices, size=n)
        return pts

    def around(self, centers: np.ndarray, n: int, scale: float) -> np.ndarray:
        """``n`` points near ``centers``: Gaussian steps of ``scale`` widths, 20 % new choices."""
        pts = centers[self.rng.randint(len(centers), size=n)].copy()
        width = np.where(self.highs > self.lows, self.highs - self.lows, 0.0)
        pts += self.rng.normal(size=pts.shape) * scale * width
        for j, choices in enumerate(self.choices):
            if choices is not None:
                flip = self.rng.uniform(size=n) < 0.2
                pts[flip, j] = self.rng.choice(choices, size=int(flip.sum()))
        return self.clip(pts)


def _snap(enc: _Encoding, names: Sequence[str], points: np.ndarray) -> np.ndarray:
    """Points rounded to what the parameters can take (ints, steps, choice indices)."""
    out = points.copy()
    for j, n in enumerate(names):
        dist = enc.space[n]
        if isinstance(dist, CategoricalDistribution):
            out[:, j] = np.round(out[:, j])
        elif isinstance(dist, IntDistribution) or getattr(dist, "step", None) is not None:
            out[:, j] = [enc.one(n, enc.decode(n, u)) for u in out[:, j]]
    return out


def _any_value(dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    assert isinstance(dist, FloatDistribution | IntDistribution)
    return dist.low


__all__ = ["SharedGPSampler", "SurrogateTimes", "TIMES", "log_ei"]
