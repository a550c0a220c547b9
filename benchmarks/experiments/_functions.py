"""Layered test functions with a known optimum, for the layer-wise benchmark.

A problem is a list of blocks, one per stage; its value is the sum of the blocks' values
(minimize) plus, for the coupled variant, ``eps`` times an interaction across stages.
The uncoupled optimum is the sum of the blocks' known optima. The coupled optimum is
found numerically by :func:`numerical_optimum` (see its docstring for how).

Blocks take each parameter as a scalar or a numpy array (elementwise), so the same code
scores one trial's ``dict`` and a whole grid of points at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

Values = Mapping[str, Any]  # parameter name -> scalar or numpy array

# --------------------------------------------------------------------------- blocks


def branin(x1: Any, x2: Any) -> Any:
    """Branin-Hoo on [-5, 10] x [0, 15]; three global minima of 0.397887."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


BRANIN_MIN = 0.39788735772973816
BRANIN_ARGMINS = ((-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475))

_H3_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)


def hartmann3(h1: Any, h2: Any, h3: Any) -> Any:
    """Hartmann-3 on [0, 1]^3; global minimum -3.86278 at (0.1146, 0.5556, 0.8525)."""
    x = np.stack(np.broadcast_arrays(h1, h2, h3), axis=-1)[..., None, :]  # (..., 1, 3)
    inner = np.sum(_H3_A * (x - _H3_P) ** 2, axis=-1)  # (..., 4)
    return -np.sum(_H3_ALPHA * np.exp(-inner), axis=-1)


HARTMANN3_MIN = -3.8627797873327


def optimizer_block(lr: Any, beta: Any) -> Any:
    """log(1 + Rosenbrock) in (u, v) = (log10 lr + 3, 4 beta - 2): a curved valley.

    ``lr`` is searched on a log scale in [1e-5, 1e-1] like a learning rate; the minimum
    0 is at lr = 1e-2, beta = 0.75. The log keeps the block on the scale of the others
    (raw Rosenbrock reaches 3600 here).
    """
    u, v = np.log10(lr) + 3, 4 * beta - 2
    return np.log1p((1 - u) ** 2 + 100 * (v - u**2) ** 2)


_ACTIVATION_COST = {"relu": 0.3, "gelu": 0.0, "tanh": 1.0}


def dcnn_block(depth: Any, width: Any, activation: Any) -> Any:
    """An architecture block: int depth, int width on a log scale, categorical activation.

    Minimum 0 at depth 5, width 64, gelu.
    """
    act = np.vectorize(_ACTIVATION_COST.__getitem__, otypes=[float])(activation)
    return act + 0.1 * (depth - 5) ** 2 + 0.25 * (np.log2(width) - 6) ** 2


# ------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Block:
    """One stage's part of a problem: its parameters, default values and function."""

    name: str
    space: dict[str, BaseDistribution]
    defaults: dict[str, Any]
    fn: Callable[..., Any]
    minimum: float
    argmins: tuple[tuple[Any, ...], ...] = ()  # the global minimizers, when several

    def __call__(self, values: Values) -> Any:
        return self.fn(*(values[name] for name in self.space))


@dataclass(frozen=True)
class Problem:
    """A sum of blocks plus ``eps`` times a coupling term (minimize).

    Args:
        name: Key used in the results.
        blocks: One per stage, in stage order.
        eps: Weight of the coupling (0: independent blocks).
        coupling: Interaction across stages, on the parameters' unit-scaled values.
        f_star: The optimum; ``None`` until :func:`numerical_optimum` fills it in.
        note: How ``f_star`` was obtained.
        description: One line for the results.
    """

    name: str
    blocks: tuple[Block, ...]
    eps: float = 0.0
    coupling: Callable[[Values], Any] | None = None
    f_star: float | None = None
    note: str = "sum of the blocks' known minima"
    description: str = ""

    @property
    def space(self) -> dict[str, BaseDistribution]:
        return {k: d for b in self.blocks for k, d in b.space.items()}

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: v for b in self.blocks for k, v in b.defaults.items()}

    def __call__(self, values: Values) -> Any:
        total = sum(block(values) for block in self.blocks)
        if self.eps and self.coupling is not None:
            total = total + self.eps * self.coupling(unit(self.space, values))
        return total

    def regret(self, value: float) -> float:
        assert self.f_star is not None, "compute f_star first"
        return float(value - self.f_star)


def unit(space: Mapping[str, BaseDistribution], values: Values) -> dict[str, Any]:
    """Numeric parameters scaled to [0, 1] in their own scale (log for log parameters)."""
    out = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution) or name not in values:
            continue
        x, low, high = values[name], dist.low, dist.high
        if dist.log:
            x, low, high = np.log(x), math.log(low), math.log(high)
        out[name] = (np.asarray(x, dtype=float) - low) / (high - low)
    return out


def _blocks() -> tuple[Block, ...]:
    # Stage order follows the network's data order (temporal -> DBN -> DCNN) with the
    # optimizer last, as the paper tunes it. Defaults are plausible, not optimal: the
    # learning rate's default (1e-4) is ten times too small, which is what makes the
    # coupled variant lock in an oversized architecture.
    return (
        Block(
            "temporal",
            {"x1": FloatDistribution(-5, 10), "x2": FloatDistribution(0, 15)},
            {"x1": 2.5, "x2": 7.5},
            branin,
            BRANIN_MIN,
            BRANIN_ARGMINS,
        ),
        Block(
            "dbn",
            {f"h{i}": FloatDistribution(0, 1) for i in (1, 2, 3)},
            {"h1": 0.5, "h2": 0.5, "h3": 0.5},
            hartmann3,
            HARTMANN3_MIN,
        ),
        Block(
            "dcnn",
            {
                "depth": IntDistribution(1, 8),
                "width": IntDistribution(8, 256, log=True),
                "activation": CategoricalDistribution(["relu", "gelu", "tanh"]),
            },
            {"depth": 3, "width": 32, "activation": "relu"},
            dcnn_block,
            0.0,
        ),
        Block(
            "optimizer",
            {"lr": FloatDistribution(1e-5, 1e-1, log=True), "beta": FloatDistribution(0, 1)},
            {"lr": 1e-4, "beta": 0.9},
            optimizer_block,
            0.0,
        ),
    )


def network_coupling(s: Values) -> Any:
    """Bilinear terms on unit-scaled parameters, one per pair of adjacent stages (a ring).

    Modelled on the known weakness: ``(depth - 1/2)(lr - 1/2)`` makes a larger depth
    best at a too-small learning rate, and ``-(h3 - 1/2)(depth - 1/2)`` pushes depth up
    once the DBN block is tuned (h3* ~ 0.85), so tuning the architecture at the default
    learning rate picks it too deep. Each term lies in [-1/4, 1/4], so the coupling is
    within ``+- eps``.
    """

    def c(a: str, b: str) -> Any:
        return (s[a] - 0.5) * (s[b] - 0.5)

    return c("x1", "h1") - c("h3", "depth") + c("depth", "lr") + c("beta", "x2")


def pair_coupling(s: Values) -> Any:
    """Two bilinear terms between the Branin and Hartmann-3 stages, on unit-scaled values.

    Each term lies in [-1/4, 1/4], so the coupling is within ``+- eps / 2``.
    """
    return (s["x1"] - 0.5) * (s["h1"] - 0.5) + (s["x2"] - 0.5) * (s["h3"] - 0.5)


COUPLED_EPS = 2.0


def problems() -> list[Problem]:
    """The benchmark's problems; the coupled ones' ``f_star`` is still to compute."""
    net = _blocks()
    two = (net[0], net[1])
    return [
        Problem(
            "branin+hartmann3",
            two,
            f_star=sum(b.minimum for b in two),
            description="2 stages: Branin (2 floats) + Hartmann-3 (3 floats)",
        ),
        Problem(
            "branin+hartmann3-coupled",
            two,
            eps=COUPLED_EPS,
            coupling=pair_coupling,
            description=f"branin+hartmann3 + eps * [(x1-1/2)(h1-1/2) + (x2-1/2)(h3-1/2)] on "
            f"unit-scaled values, eps = {COUPLED_EPS} (coupling within +-eps/2)",
        ),
        Problem(
            "network4",
            net,
            f_star=sum(b.minimum for b in net),
            description="4 stages, 10 parameters: Branin + Hartmann-3 + architecture "
            "(int, int-log, categorical) + log(1+Rosenbrock) in (log lr, beta)",
        ),
        Problem(
            "network4-coupled",
            net,
            eps=COUPLED_EPS,
            coupling=network_coupling,
            description=f"network4 + eps * ring of bilinear cross-stage terms on unit-scaled "
            f"values, eps = {COUPLED_EPS} (coupling within +-eps)",
        ),
        cnn4_coupled(),
        fusion5_coupled(),
    ]


# ------------------------------------------------------- network-like problems


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a network-like problem.

    Args:
        dist: Its distribution.
        default: The value used until its stage is tuned (plausible, not optimal).
        opt: Its value at the problem's optimum.
        weight: Weight of its own bowl ``weight * du**2`` (``du``: unit-scaled distance
            to ``opt``, log scale for log parameters); numeric parameters only.
        costs: Categoricals: the own cost of each choice (0 for ``opt``).
    """

    dist: BaseDistribution
    default: Any
    opt: Any
    weight: float = 1.0
    costs: Mapping[Any, float] | None = None


RIPPLE = 0.05
"""Height of each numeric parameter's cosine ripple: local minima every 1/4 of the range."""


def _du(dist: BaseDistribution, value: Any, opt: Any) -> Any:
    """Unit-scaled signed distance of ``value`` from ``opt`` (log scale for log params)."""
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        return (np.log(np.asarray(value, dtype=float)) - math.log(opt)) / math.log(high / low)
    return (np.asarray(value, dtype=float) - opt) / (high - low)


def _cost(table: Mapping[Any, float], value: Any) -> Any:
    return np.vectorize(lambda v: table[v.item() if hasattr(v, "item") else v],
                        otypes=[float])(value)


def _own_block(params: Mapping[str, Param]) -> Callable[..., Any]:
    """A stage's own part: a rippled bowl per numeric parameter, a cost per choice.

    Every term is >= 0 and 0 at ``opt``, so the block's minimum is 0 there.
    """

    def fn(*values: Any) -> Any:
        total: Any = 0.0
        for p, v in zip(params.values(), values, strict=True):
            if isinstance(p.dist, CategoricalDistribution):
                total = total + _cost(p.costs or {}, v)
            else:
                du = _du(p.dist, v, p.opt)
                total = total + p.weight * du**2 + RIPPLE * (1 - np.cos(8 * math.pi * du))
        return total

    return fn


@dataclass(frozen=True)
class NetworkProblem(Problem):
    """A network-like problem: per-stage rippled bowls plus cross-stage interactions.

    Each interaction is a square (of a linear combination of unit-scaled distances to
    the optimum, or of a discrete mismatch) that is 0 at the optimum, so f* = 0 exactly
    while each stage's best values move with the values of the stages after it.
    """

    params: Mapping[str, Param] | None = None
    interaction: Callable[[Callable[[str], Any], Values], Any] | None = None

    def __call__(self, values: Values) -> Any:
        total = sum(block(values) for block in self.blocks)
        assert self.params is not None and self.interaction is not None
        params = self.params

        def du(name: str) -> Any:
            p = params[name]
            return _du(p.dist, values[name], p.opt)

        return total + self.interaction(du, values)


def _network_problem(
    name: str,
    stages: Mapping[str, Mapping[str, Param]],
    interaction: Callable[[Callable[[str], Any], Values], Any],
    description: str,
) -> NetworkProblem:
    blocks = tuple(
        Block(
            stage,
            {k: p.dist for k, p in params.items()},
            {k: p.default for k, p in params.items()},
            _own_block(params),
            0.0,
        )
        for stage, params in stages.items()
    )
    flat = {k: p for params in stages.values() for k, p in params.items()}
    return NetworkProblem(
        name,
        blocks,
        f_star=0.0,
        note="0 by construction (every term is >= 0 and 0 at the planted optimum)",
        description=description,
        params=flat,
        interaction=interaction,
    )


def _f(low: float, high: float, log: bool = False) -> FloatDistribution:
    return FloatDistribution(low, high, log=log)


def _i(low: int, high: int, log: bool = False) -> IntDistribution:
    return IntDistribution(low, high, log=log)


def _c(*choices: Any) -> CategoricalDistribution:
    return CategoricalDistribution(list(choices))


def cnn4_coupled() -> NetworkProblem:
    """4 stages, 20 parameters (7 float, 9 int, 4 categorical), coupled like a network.

    Interactions (``d(x)``: unit-scaled distance of ``x`` to its optimum):

    * learning rate against width, depth and batch (``d(lr) + d(width)/2 + 0.3 d(depth)
      - d(batch)/2``): at the default lr (20x too small) the architecture stage picks an
      oversized network;
    * the DBN's pretraining lr and hidden size against the head's class weight and loss
      mix (the DBN's best depends on the head);
    * temporal dropout against the DCNN's dropout (one budget of regularization), LSTM
      size against the DBN's capacity;
    * the temporal kernel (categorical) against the DCNN depth: a receptive field of
      ``depth * (kernel - 1)`` = 24 is best, so at the default depth 4 the kernel 7 wins
      and then holds depth at 4.
    """
    stages = {
        "temporal": {
            "conv_channels": Param(_i(8, 128, log=True), 32, 48, 1.0),
            "lstm_hidden": Param(_i(8, 256, log=True), 16, 64, 1.0),
            "kernel": Param(_c(3, 5, 7), 3, 5, costs={3: 0.2, 5: 0.0, 7: 0.15}),
            "t_dropout": Param(_f(0.0, 0.5), 0.1, 0.2, 1.0),
            "time_pool": Param(_c("mean", "last", "attn"), "last", "attn",
                               costs={"mean": 0.1, "last": 0.3, "attn": 0.0}),
        },
        "dbn": {
            "n_rbm": Param(_i(1, 4), 2, 3, 1.0),
            "rbm_hidden": Param(_i(16, 512, log=True), 64, 128, 1.0),
            "cd_k": Param(_i(1, 5), 1, 2, 0.5),
            "pretrain_lr": Param(_f(1e-4, 1e-1, log=True), 1e-2, 3e-3, 1.0),
            "pretrain_epochs": Param(_i(1, 20), 5, 8, 0.5),
        },
        "dcnn": {
            "depth": Param(_i(2, 10), 4, 6, 1.0),
            "width": Param(_i(8, 256, log=True), 32, 64, 1.0),
            "activation": Param(_c("relu", "gelu", "tanh", "elu"), "relu", "gelu",
                                costs={"relu": 0.1, "gelu": 0.0, "tanh": 0.4, "elu": 0.05}),
            "dropout": Param(_f(0.0, 0.6), 0.0, 0.3, 1.0),
            "norm": Param(_c("batch", "group", "none"), "none", "batch",
                          costs={"batch": 0.0, "group": 0.05, "none": 0.3}),
        },
        "optim": {
            "lr": Param(_f(1e-5, 1e-1, log=True), 1e-4, 2e-3, 1.0),
            "batch": Param(_i(8, 256, log=True), 32, 64, 0.5),
            "weight_decay": Param(_f(1e-6, 1e-2, log=True), 1e-5, 1e-4, 0.5),
            "pos_weight": Param(_f(1.0, 30.0, log=True), 1.0, 6.0, 0.5),
            "mse_weight": Param(_f(0.0, 1.0), 0.5, 0.3, 0.5),
        },
    }

    def interaction(d: Callable[[str], Any], v: Values) -> Any:
        depth = np.asarray(v["depth"], dtype=float)
        kernel = np.asarray(v["kernel"], dtype=float)
        return (
            4 * (d("lr") + 0.5 * d("width") + 0.3 * d("depth") - 0.5 * d("batch")) ** 2
            + 3 * (d("pretrain_lr") - 0.6 * d("pos_weight") + 0.4 * d("mse_weight")) ** 2
            + 2 * (d("rbm_hidden") - 0.5 * d("pos_weight")) ** 2
            + 2 * (d("t_dropout") + 1.2 * d("dropout")) ** 2
            + 2 * (d("lstm_hidden") - 0.5 * d("rbm_hidden") - 0.3 * d("n_rbm")) ** 2
            + 0.004 * (depth * (kernel - 1) - 24) ** 2
        )

    return _network_problem(
        "cnn4-coupled",
        stages,
        interaction,
        "4 stages (temporal, dbn, dcnn, optim), 20 parameters (7 float, 9 int, "
        "4 categorical): rippled bowls per stage "
        "+ lr x width/depth/batch, dbn x head weights, dropout x dropout, lstm x dbn and "
        "kernel x depth interactions; f* = 0 at a planted optimum",
    )


def fusion5_coupled() -> NetworkProblem:
    """5 stages, 17 parameters (6 float, 7 int, 4 categorical), the fusion network's order.

    Interactions: the learning rate against batch (linear scaling), width and depth;
    the DBN's pretraining lr and size against the head's class weight and loss mix;
    regularization (augmentation + temporal dropout) against the DCNN's width; LSTM
    size against DCNN depth; the input sources (categorical, stage 1) against the
    number of RBMs (stage 3): more sources need more RBMs, and at the default of one
    RBM the optical-only choice wins and then holds the DBN at one RBM.
    """
    stages = {
        "data": {
            "patch": Param(_c(64, 128, 256), 128, 256, costs={64: 0.3, 128: 0.1, 256: 0.0}),
            "sources": Param(_c("optical", "optical+dem", "all"), "optical+dem", "all",
                             costs={"optical": 0.2, "optical+dem": 0.1, "all": 0.0}),
            "augment": Param(_f(0.0, 1.0), 0.0, 0.6, 1.0),
        },
        "temporal": {
            "lstm_hidden": Param(_i(8, 256, log=True), 16, 48, 1.0),
            "conv3d": Param(_i(1, 4), 2, 3, 0.5),
            "downsample": Param(_c(2, 4, 8), 4, 4, costs={2: 0.2, 4: 0.0, 8: 0.1}),
            "t_dropout": Param(_f(0.0, 0.5), 0.0, 0.25, 1.0),
        },
        "dbn": {
            "n_rbm": Param(_i(1, 4), 1, 2, 0.9),
            "rbm_hidden": Param(_i(16, 512, log=True), 32, 256, 1.0),
            "pretrain_lr": Param(_f(1e-4, 1e-1, log=True), 1e-3, 1e-2, 1.0),
        },
        "dcnn": {
            "depth": Param(_i(2, 12), 4, 8, 1.0),
            "width": Param(_i(8, 256, log=True), 32, 96, 1.0),
            "activation": Param(_c("relu", "gelu", "tanh"), "relu", "gelu",
                                costs={"relu": 0.1, "gelu": 0.0, "tanh": 0.4}),
        },
        "head": {
            "lr": Param(_f(1e-5, 1e-1, log=True), 1e-4, 1e-3, 1.0),
            "class_weight": Param(_f(1.0, 50.0, log=True), 1.0, 10.0, 0.5),
            "loss_mix": Param(_f(0.0, 1.0), 0.5, 0.2, 0.5),
            "batch": Param(_i(4, 128, log=True), 16, 32, 0.5),
        },
    }
    need = {"optical": 1, "optical+dem": 2, "all": 2}
    patch_cells = {64: 4.0, 128: 5.0, 256: 6.0}  # log2(patch / 4)

    def interaction(d: Callable[[str], Any], v: Values) -> Any:
        n_rbm = np.asarray(v["n_rbm"], dtype=float)
        down = np.log2(np.asarray(v["downsample"], dtype=float))
        return (
            4 * (d("lr") - 0.5 * d("batch") + 0.4 * d("width") + 0.2 * d("depth")) ** 2
            + 3 * (d("pretrain_lr") - 0.5 * d("class_weight")) ** 2
            + 2 * (d("rbm_hidden") + 0.5 * d("loss_mix") - 0.3 * d("class_weight")) ** 2
            + 2 * (d("augment") + d("t_dropout") - 0.5 * d("width")) ** 2
            + 2 * (d("lstm_hidden") - 0.5 * d("depth")) ** 2
            + 0.3 * (n_rbm - _cost(need, v["sources"])) ** 2
            + 0.15 * (_cost(patch_cells, v["patch"]) + 2 - down - 6) ** 2
        )

    return _network_problem(
        "fusion5-coupled",
        stages,
        interaction,
        "5 stages (data, temporal, dbn, dcnn, head), 17 parameters (6 float, 7 int, "
        "4 categorical): rippled bowls per stage + lr x batch/width/depth, dbn x head "
        "weights, regularization x width, lstm x depth, sources x RBM count and patch x "
        "downsampling interactions; f* = 0 at a planted optimum",
    )


# ------------------------------------------------------------- numerical optimum


def numerical_optimum(
    problem: Problem,
    fixed: Mapping[str, Any] | None = None,
    *,
    n_dense: int = 2**15,
    n_local: int = 12,
    seed: int = 0,
) -> tuple[float, dict[str, Any]]:
    """The minimum of a problem: discrete parameters enumerated, continuous ones searched.

    For every combination of the integer and categorical parameters (see
    :func:`_discrete_combinations`): a dense scrambled Sobol sample of ``n_dense`` points
    over the continuous parameters (in their own scale, log for log parameters), then
    L-BFGS-B from the ``n_local`` best of them; the best result wins.

    Args:
        problem: The problem.
        fixed: Parameters held at these values (the rest are searched).

    Returns:
        The minimum and the searched parameters' values there.
    """
    from scipy.optimize import minimize
    from scipy.stats import qmc

    fixed = dict(fixed or {})
    space = {k: d for k, d in problem.space.items() if k not in fixed}
    discrete = {k: d for k, d in space.items() if not isinstance(d, FloatDistribution)}
    cont = {k: d for k, d in space.items() if isinstance(d, FloatDistribution)}
    lows = np.array([math.log(d.low) if d.log else d.low for d in cont.values()])
    highs = np.array([math.log(d.high) if d.log else d.high for d in cont.values()])

    def values_of(z: np.ndarray, given: Mapping[str, Any]) -> dict[str, Any]:
        out = {**fixed, **given}
        for i, (name, d) in enumerate(cont.items()):
            out[name] = np.exp(z[..., i]) if d.log else z[..., i]
        return out

    best: tuple[float, dict[str, Any]] = (math.inf, {})
    combos = _discrete_combinations(problem, discrete, fixed)
    if not cont:
        for combo in combos:
            value = float(problem({**fixed, **combo}))
            if value < best[0]:
                best = (value, combo)
        return best
    grid = lows + qmc.Sobol(len(cont), seed=seed).random(n_dense) * (highs - lows)
    for combo in combos:
        f_grid = problem(values_of(grid, combo))
        for start in grid[np.argsort(f_grid)[:n_local]]:
            res = minimize(
                lambda z, combo=combo: float(problem(values_of(z, combo))),
                start,
                method="L-BFGS-B",
                bounds=list(zip(lows, highs, strict=True)),
            )
            if res.fun < best[0]:
                point = {k: float(np.asarray(res.x)[i]) for i, k in enumerate(cont)}
                point = {k: math.exp(v) if cont[k].log else v for k, v in point.items()}
                best = (float(res.fun), {**combo, **point})
    return best


def stagewise_optimum(problem: Problem) -> tuple[float, dict[str, Any]]:
    """What a perfect one-pass layer-wise search reaches: the lock-in floor.

    Starting from the defaults, each stage in order is set to its exact minimum (by
    :func:`numerical_optimum`) with the earlier stages at their tuned values and the later
    ones at their defaults. On independent blocks this is the optimum; with coupling it
    is not, and no amount of per-stage budget closes the gap.
    """
    values = problem.defaults
    value = math.inf
    for block in problem.blocks:
        others = {k: v for k, v in values.items() if k not in block.space}
        value, tuned = numerical_optimum(problem, others)
        values.update(tuned)
    return value, values


def basin_floors(problem: Problem, f_star: float) -> dict[str, float]:
    """Regret left once the first stage settled in each of its block's global minima.

    With the later stages at their defaults, a first block with several equal minima
    (Branin's three) gives stage-wise search no reason to prefer one; with coupling,
    the rest of the search is then confined to that basin. Per minimizer of the first
    block: the best value over all other parameters with the first stage fixed there,
    minus ``f_star``. Empty when the first block has a single minimizer or no coupling.
    """
    first = problem.blocks[0]
    if not problem.eps or len(first.argmins) < 2:
        return {}
    floors = {}
    for point in first.argmins:
        fixed = dict(zip(first.space, point, strict=True))
        value, _ = numerical_optimum(problem, fixed, n_dense=2**12)
        label = ", ".join(f"{k}={v:.4g}" for k, v in fixed.items())
        floors[label] = value - f_star
    return floors


def _discrete_combinations(
    problem: Problem, discrete: Mapping[str, BaseDistribution], fixed: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Combinations of discrete values worth searching.

    A discrete parameter outside the coupling only enters its own block, additively, so
    its best value does not depend on anything else: it is fixed at the value minimizing
    its block (found by enumeration with the other discrete parameters of the block), and
    only the coupled ones are enumerated jointly. This keeps an int-log width with 249
    values from multiplying the work by 249.
    """
    coupled = _coupled_names(problem)
    choices = {k: _choices(d) for k, d in discrete.items()}
    fixed: dict[str, Any] = {}
    for block in problem.blocks:
        own = [k for k in block.space if k in discrete and k not in coupled]
        if not own:
            continue
        rest = {k: choices[k] for k in block.space if k in discrete and k in coupled}
        given = {k: fixed.get(k, block.defaults[k]) for k in block.space if k not in discrete}
        best_val, best_combo = math.inf, {}
        for combo in _product({**{k: choices[k] for k in own}, **rest}):
            v = float(block({**given, **combo}))
            if v < best_val:
                best_val, best_combo = v, combo
        fixed.update({k: best_combo[k] for k in own})
    enumerated = {k: choices[k] for k in discrete if k not in fixed}
    return [{**fixed, **combo} for combo in _product(enumerated)]


def _coupled_names(problem: Problem) -> set[str]:
    if not problem.eps or problem.coupling is None:
        return set()
    # Which unit-scaled values the coupling reads: ask it with a recording mapping.
    seen: set[str] = set()

    class Recorder(dict):
        def __getitem__(self, key: str) -> float:
            seen.add(key)
            return 0.5

    problem.coupling(Recorder())
    return seen


def _choices(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert isinstance(dist, IntDistribution)
    return list(range(dist.low, dist.high + 1, dist.step))


def _product(choices: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    names = list(choices)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices.values())]
