"""The search spec: everything a sweep needs, as pydantic models, and the checks across
fields (`SearchSpec.problems`: every corner of the space is a valid algorithm config, the
warm starts lie in the space, confirmation battles are fresh, ...).

Reading it from a YAML file, with errors that name the file and the line, is
`spec_file.py`'s job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from poke_tune.algos import ALGORITHMS, AlgoConfig, TrainConfig, parse_algo_config
from poke_tune.eval.winrate import BENCHMARK_SEED, CONFIRM_SEED, EVAL_SEED
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.locations import resolve_tracking_uri
from poke_tune.tuning.spec_base import Strict

# GenerateRecipe, ImportRecipe and RecordRecipe are not used here: they are named here
# because a sweep's searcher state, pickled by Tune before the dataset section moved to
# spec_data.py, names them in this module, and `poke-tune resume` must still read it.
from poke_tune.tuning.spec_data import (  # noqa: F401
    DatasetSpec,
    GenerateRecipe,
    ImportRecipe,
    RecordRecipe,
)
from poke_tune.tuning.spec_rounds import RoundsSpec

__all__ = [
    "OBJECTIVE_KEY",
    "SCORE_KEY",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "RoundsSpec",
    "SearchSpec",
    "SpecError",
    "set_dotted",
]

OBJECTIVE_KEY = "objective/best"
"""What Tune and Optuna optimise: the best-so-far value of the spec's objective metric
(budget-robust, so an ASHA-stopped trial reports its best, not its last, evaluation)."""
SCORE_KEY = "objective/value"
"""The objective's value at this evaluation. Checkpoints are ranked by it: ranked by the
running best, every checkpoint after a trial's peak ties with the peak and Ray would keep
the newest, deleting the peak."""

PARAM_TYPES = ("float", "int", "categorical")


class SpecError(ValueError):
    """An invalid search spec; the message names file, line, key path and expectation."""


class Condition(Strict):
    """Sample a parameter only when another parameter has one of some values."""

    param: str
    values: list[Any] = Field(min_length=1)


class _RangeParam(Strict):
    """A numeric range; for integers `low > 0` means `low >= 1`, so one check serves both."""

    low: float
    high: float
    log: bool = False
    when: Condition | None = None

    @model_validator(mode="after")
    def _check(self) -> _RangeParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self


class FloatParam(_RangeParam):
    type: Literal["float"]

    def distribution(self) -> BaseDistribution:
        """The parameter as Optuna samples it (the one place its range is translated)."""
        return FloatDistribution(self.low, self.high, log=self.log)


class IntParam(_RangeParam):
    type: Literal["int"]
    low: int
    high: int

    def distribution(self) -> BaseDistribution:
        return IntDistribution(self.low, self.high, log=self.log)


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)
    when: Condition | None = None

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class ObjectiveSpec(Strict):
    """What a trial is judged by."""

    metric: str = "eval/win_rate"
    """`eval/win_rate` (real battles) or an offline metric such as `offline/fqe_value`."""
    mode: Literal["max", "min"] = "max"
    opponent: str = "max-damage"
    """Built-in opponent of the win-rate evaluation."""
    battles: int = Field(default=100, gt=0)
    """Battles per evaluation; the same seeded set for every trial and evaluation."""
    seed: int = EVAL_SEED
    max_turns: int = Field(default=200, gt=0)

    @property
    def uses_battles(self) -> bool:
        return self.metric.startswith("eval/")

    @property
    def sign(self) -> float:
        """+1 when larger is better, -1 when smaller is: `sign * value` is maximised."""
        return 1.0 if self.mode == "max" else -1.0


class ConfirmSpec(Strict):
    """After the search: re-play the shortlist on fresh battles, choose and promote there.

    The selection score of the best of many trials is biased upwards (winner's curse), so
    no number the search itself measured is reported as the champion's. The shortlist
    (`top_k` trials by selection score) and the baselines play the same `battles` battles,
    seeded by `seed` (never the objective's seed), against the objective's opponent.
    """

    enabled: bool = True
    """Confirm win-rate sweeps (offline-metric objectives have no battles to confirm)."""
    top_k: int = Field(default=3, gt=0)
    battles: int = Field(default=500, gt=0)
    seed: int = CONFIRM_SEED
    baselines: list[str] | None = None
    """Policies every candidate must beat; default: the dataset's behaviour policies."""
    bc: bool = False
    """Also train BC on the same data with the same training budget as a baseline."""
    race: bool = True
    """Play the battles in `rounds`; a candidate whose paired interval against the leader
    lies wholly below zero stops early (the leader and baselines play every battle)."""
    rounds: int = Field(default=5, gt=0)


class SearcherSpec(Strict):
    algorithm: Literal["tpe", "cmaes", "random", "grid"] = "tpe"
    seed: int = 0
    warm_start: list[dict[str, Any]] = Field(default_factory=list)
    """Points to evaluate first (e.g. the paper's defaults)."""
    storage: str | None = None
    """Optional Optuna RDB storage (e.g. `sqlite:///runs/optuna.db`) so optuna-dashboard can
    watch the study; the study is named after the sweep. In memory by default."""


class SchedulerSpec(Strict):
    type: Literal["fifo", "asha"] = "asha"
    grace_period: int = Field(default=2, gt=0)
    """Evaluations before ASHA may stop a trial."""
    reduction_factor: float = Field(default=2.0, gt=1)


class ResourcesSpec(Strict):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"gpu must be a fraction in (0, 1] or a whole number, got {gpu}")
        return gpu


class CheckpointSpec(Strict):
    every: int = Field(default=1, gt=0)
    """Checkpoint every this many evaluations."""
    keep: int = Field(default=2, gt=0)
    """Best checkpoints kept per trial, by the objective."""


class MLflowSpec(Strict):
    """Where and how the sweep is tracked (see `poke_tune.tuning.track.tracking`)."""

    enabled: bool = True
    tracking_uri: str | None = None
    """`http(s)://host:port` or `sqlite:///path`; else `--tracking-uri`, then
    MLFLOW_TRACKING_URI, then a SQLite store beside the local storage path."""
    experiment: str | None = None
    """MLflow experiment name; the sweep's `name` by default."""
    registered_model: str | None = None
    """Registered model the winner is logged to; `poke-tune-<name>` by default."""
    retry_timeout_s: float = Field(default=300.0, ge=0)
    """How long the end of a sweep waits for an unreachable tracking server before it
    saves the unsent records to the experiment folder."""


class SearchSpec(Strict):
    """A whole sweep."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    algorithm: AlgoConfig
    """`algo` (a name in `algos.ALGORITHMS`) and fixed hyperparameters of that algorithm: its typed
    config, validated here once."""
    dataset: DatasetSpec
    training: TrainConfig = TrainConfig(steps=3000, eval_interval=500)
    objective: ObjectiveSpec = ObjectiveSpec()
    confirm: ConfirmSpec = ConfirmSpec()
    search_space: dict[str, Param] = Field(min_length=1)
    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    num_samples: int = Field(default=8, gt=0)
    max_concurrent_trials: int = Field(default=2, gt=0)
    resources: ResourcesSpec = ResourcesSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    max_failures: int = Field(default=2, ge=0)
    storage_path: str = "runs/ray"
    """Where Ray Tune keeps the experiment: a local folder (relative to the current folder)
    or shared storage such as `s3://bucket/path` or an NFS mount."""
    storage_shared: bool = False
    """Declares a local `storage_path` shared (mounted at the same path on every node, e.g.
    NFS), so a multi-node cluster accepts it; s3:// and gs:// URIs are shared anyway."""
    mlflow: MLflowSpec = MLflowSpec()
    rounds: RoundsSpec | None = None
    """The data flywheel's rounds (`poke-tune iterate`); `run` ignores them."""

    @model_validator(mode="after")
    def _default_tracking_uri(self) -> SearchSpec:
        # Resolved once, where the spec is read: trials and resumed sweeps see the same URI.
        if self.mlflow.tracking_uri is not None:
            return self
        uri = resolve_tracking_uri(None, self.storage_path)
        return self.model_copy(
            update={"mlflow": self.mlflow.model_copy(update={"tracking_uri": uri})}
        )

    @model_validator(mode="after")
    def _check_algorithm(self, info: ValidationInfo) -> SearchSpec:
        # `load_spec` runs these checks itself, to point at the offending line.
        if not (info.context or {}).get("defer_semantic_checks"):
            for loc, message in self.problems():
                raise ValueError(f"{'.'.join(map(str, loc))}: {message}")
        return self

    def _policy_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """The objective's opponent and the confirmation's baselines must be policies."""
        named: list[tuple[tuple[str | int, ...], str]] = []
        if self.objective.uses_battles:
            named.append((("objective", "opponent"), self.objective.opponent))
        for index, name in enumerate(self.confirm.baselines or []):
            named.append((("confirm", "baselines", index), name))
        found = []
        for loc, name in named:
            try:
                make_policy(name)
            except ValueError as error:
                found.append((loc, str(error)))
        return found

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks across fields: every corner of the space is a valid algorithm config,
        and `when` conditions name earlier parameters. Returns (key path, message) pairs."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        found += self._policy_problems()
        found += self._searcher_problems()
        found += self._rounds_problems()
        reported = self.reported_metrics()
        if (
            not self.objective.metric.startswith("train/")
            and self.objective.metric not in reported
        ):
            found.append(
                (
                    ("objective", "metric"),
                    f"{self.objective.metric!r} is not reported by this sweep; expected one of "
                    f"{sorted(reported)} or a train/ metric of the algorithm",
                )
            )
        if self.confirm.enabled and self.confirm.seed == self.objective.seed:
            found.append(
                (
                    ("confirm", "seed"),
                    f"{self.confirm.seed} is the objective's seed: confirmation battles must be "
                    "fresh, not the battles the search selected on",
                )
            )
        names = list(self.search_space)
        for name, param in self.search_space.items():
            corners: list[tuple[str, int | None, Any]]
            if isinstance(param, CategoricalParam):
                corners = [("choices", i, v) for i, v in enumerate(param.choices)]
            else:
                corners = [("low", None, param.low), ("high", None, param.high)]
            for key, index, value in corners:
                try:
                    self.algorithm_config({name: value})
                except ValidationError as error:
                    if any(e["type"] == "extra_forbidden" for e in error.errors()):
                        found.append(
                            (
                                ("search_space", name),
                                f"{name!r} is not a {self.algorithm.algo} hyperparameter",
                            )
                        )
                        break
                    loc: tuple[str | int, ...] = ("search_space", name, key)
                    if index is not None:
                        loc += (index,)
                    reason = "; ".join(e["msg"] for e in error.errors())
                    found.append(
                        (
                            loc,
                            f"{name}={value!r} is not a valid "
                            f"{self.algorithm.algo} setting: {reason}",
                        )
                    )
            condition = param.when
            if condition is not None and condition.param not in names[: names.index(name)]:
                found.append(
                    (
                        ("search_space", name, "when", "param"),
                        f"unknown parameter {condition.param!r}: `when` must name a parameter "
                        "listed before this one",
                    )
                )
        return found

    def _searcher_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Grid searches need categorical parameters; warm-start points must lie in the
        space (Optuna would fail that trial, or silently drop an unknown name)."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        if self.searcher.algorithm == "grid":
            for name, param in self.search_space.items():
                if not isinstance(param, CategoricalParam):
                    found.append(
                        (
                            ("search_space", name, "type"),
                            f"the grid searcher needs categorical parameters (`choices`), "
                            f"not a {param.type} range",
                        )
                    )
        for index, point in enumerate(self.searcher.warm_start):
            for name, value in point.items():
                loc: tuple[str | int, ...] = ("searcher", "warm_start", index, name)
                known = self.search_space.get(name)
                if known is None:
                    expected = ", ".join(self.search_space)
                    found.append((loc, f"unknown parameter {name!r}; expected one of {expected}"))
                elif (problem := _outside(known, value)) is not None:
                    found.append((loc, problem))
        return found

    def _rounds_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """The flywheel compares champions by win rate and generates battles like the
        dataset's recipe; its curve battles must be fresh."""
        rounds = self.rounds
        if rounds is None:
            return []
        found: list[tuple[tuple[str | int, ...], str]] = []
        if not self.objective.uses_battles:
            found.append(
                (
                    ("rounds",),
                    f"the data flywheel compares champions by win rate: the objective "
                    f"{self.objective.metric!r} plays no battles (use eval/win_rate)",
                )
            )
        if self.dataset.generate is None:
            found.append(
                (
                    ("rounds",),
                    "the data flywheel generates each round's battles like the dataset's "
                    "`generate` recipe (format, max_turns, hp_shaping): add `dataset.generate` "
                    "(beside an `import`, the two are one dataset)",
                )
            )
        named: list[tuple[tuple[str | int, ...], str]] = [
            (("rounds", "curve_opponents", i), name)
            for i, name in enumerate(rounds.curve_opponents)
        ]
        if rounds.reference is not None:
            named.append((("rounds", "reference"), rounds.reference))
        for loc, name in named:
            try:
                make_policy(name)
            except ValueError as error:
                found.append((loc, str(error)))
        taken = {
            EVAL_SEED: "the selection's default",
            CONFIRM_SEED: "the confirmation's default",
            BENCHMARK_SEED: "the benchmarks'",
            self.objective.seed: "the objective's",
            self.confirm.seed: "the confirmation's",
        }
        if rounds.curve_seed in taken:
            found.append(
                (
                    ("rounds", "curve_seed"),
                    f"{rounds.curve_seed} is {taken[rounds.curve_seed]} seed: the curve's "
                    "battles must be fresh",
                )
            )
        taken[rounds.curve_seed] = "the curve's"
        if rounds.promotion is not None and rounds.promotion.seed in taken:
            found.append(
                (
                    ("rounds", "promotion", "seed"),
                    f"{rounds.promotion.seed} is {taken[rounds.promotion.seed]} seed: the "
                    "promotion's battles select, so they must be apart from every other set",
                )
            )
        return found

    def reported_metrics(self) -> set[str]:
        """Evaluation metrics every trial of this spec reports."""
        metrics = {"eval/win_rate", "eval/win_rate_ci_low", "eval/win_rate_ci_high"}
        metrics.add("offline/action_match")
        if ALGORITHMS[self.algorithm.algo].learns_critic:
            metrics.add("offline/td_error")
        if self.training.fqe_steps > 0:
            metrics.add("offline/fqe_value")
        return metrics

    def algorithm_config(self, sampled: dict[str, Any]) -> AlgoConfig:
        """The typed algorithm config of one trial: fixed settings + sampled values."""
        values = self.algorithm.model_dump(mode="json")
        for key, value in sampled.items():
            set_dotted(values, key, value)
        return parse_algo_config(values)


def _outside(param: FloatParam | IntParam | CategoricalParam, value: Any) -> str | None:
    """Why `value` is not a point of `param`'s range, or None."""
    if isinstance(param, CategoricalParam):
        if value in param.choices:
            return None
        return f"{value!r} is not one of the choices {param.choices}"
    numeric = (int,) if isinstance(param, IntParam) else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        return f"{value!r} is not a{'n' if param.type == 'int' else ''} {param.type}"
    if not param.low <= value <= param.high:
        return f"{value!r} is outside the range [{param.low}, {param.high}]"
    return None


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """`set_dotted(d, "network.hidden_sizes", [64])` sets d["network"]["hidden_sizes"]."""
    *parents, leaf = key.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
