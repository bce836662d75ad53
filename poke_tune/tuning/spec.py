"""The search spec: one YAML file that says everything a sweep needs, validated once.

Errors name the file, the line and the key path, e.g.
`search_spaces/cql_alpha.yaml:14: search_space.alpha.low: Input should be greater than 0`.
Relative paths are stored absolute, because Ray trials run in their own working
directories: `dataset.path` against the spec's folder, a local `storage_path` against the
current folder (where results are expected).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from poke_tune.algos import (
    AlgoConfig,
    BCConfig,
    CQLConfig,
    IQLConfig,
    TrainConfig,
    parse_algo_config,
)
from poke_tune.eval.winrate import CONFIRM_SEED, EVAL_SEED
from poke_tune.sim.battles import check_battle_format
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.policies import make_policy

__all__ = [
    "OBJECTIVE_KEY",
    "SCORE_KEY",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchSpec",
    "SpecError",
    "load_spec",
    "parse_overrides",
    "resolve_tracking_uri",
    "set_dotted",
]

OBJECTIVE_KEY = "objective/best"
"""What Tune and Optuna optimise: the best-so-far value of the spec's objective metric
(budget-robust, so an ASHA-stopped trial reports its best, not its last, evaluation)."""
SCORE_KEY = "objective/value"
"""The objective's value at this evaluation. Checkpoints are ranked by it: ranked by the
running best, every checkpoint after a trial's peak ties with the peak and Ray would keep
the newest, deleting the peak."""


_PARAM_TYPES = ("float", "int", "categorical")


class SpecError(ValueError):
    """An invalid search spec; the message names file, line, key path and expectation."""


class _SpecLoader(yaml.SafeLoader):
    """Safe YAML that reads `1e-4` as a number (YAML 1.1 reads it as a string; the spec
    models are strict, so the string would be refused)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _Strict(BaseModel):
    # strict: `steps: true` or `num_samples: "8"` is an error, not 1 or 8; no inf/nan bounds.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Condition(_Strict):
    """Sample a parameter only when another parameter has one of some values."""

    param: str
    values: list[Any] = Field(min_length=1)


class _RangeParam(_Strict):
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


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)
    when: Condition | None = None

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class GenerateRecipe(_Strict):
    """A dataset made by `poke-tune data generate`, once, cached by this recipe's hash."""

    battles: int = Field(gt=0)
    policies: list[str] = Field(default=["random", "max-damage"], min_length=1)
    seed: int = 0
    battle_format: str = "gen9randombattle"
    max_turns: int = Field(default=200, gt=0)
    hp_shaping: float = Field(default=0.0, ge=0)
    """Reward shaping: this weight times the per-step change in HP balance (0 = win/loss)."""

    @field_validator("battle_format")
    @classmethod
    def _generated_teams(cls, battle_format: str) -> str:
        check_battle_format(battle_format)
        return battle_format

    def key(self) -> str:
        """The generated file's cache key: the recipe and the encoder that records it (a
        file written by another encoder version is another dataset)."""
        values = {**self.model_dump(), "encoder_version": ENCODER_VERSION}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class DatasetSpec(_Strict):
    path: Path | None = Field(default=None, strict=False)
    generate: GenerateRecipe | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of `path` or `generate`")
        return self


class ObjectiveSpec(_Strict):
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


class ConfirmSpec(_Strict):
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


class SearcherSpec(_Strict):
    algorithm: Literal["tpe", "cmaes", "random", "grid"] = "tpe"
    seed: int = 0
    warm_start: list[dict[str, Any]] = []
    """Points to evaluate first (e.g. the paper's defaults)."""
    storage: str | None = None
    """Optional Optuna RDB storage (e.g. `sqlite:///runs/optuna.db`) so optuna-dashboard can
    watch the study; the study is named after the sweep. In memory by default."""


class SchedulerSpec(_Strict):
    type: Literal["fifo", "asha"] = "asha"
    grace_period: int = Field(default=2, gt=0)
    """Evaluations before ASHA may stop a trial."""
    reduction_factor: float = Field(default=2.0, gt=1)


class ResourcesSpec(_Strict):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"gpu must be a fraction in (0, 1] or a whole number, got {gpu}")
        return gpu


class CheckpointSpec(_Strict):
    every: int = Field(default=1, gt=0)
    """Checkpoint every this many evaluations."""
    keep: int = Field(default=2, gt=0)
    """Best checkpoints kept per trial, by the objective."""


class MLflowSpec(_Strict):
    """Where and how the sweep is tracked (see `poke_tune.tuning.tracking`)."""

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


class SearchSpec(_Strict):
    """A whole sweep."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    algorithm: AlgoConfig
    """`algo` (bc / iql / cql) and fixed hyperparameters of that algorithm: its typed
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

    def reported_metrics(self) -> set[str]:
        """Evaluation metrics every trial of this spec reports."""
        metrics = {"eval/win_rate", "eval/win_rate_ci_low", "eval/win_rate_ci_high"}
        metrics.add("offline/action_match")
        if self.algorithm.algo != "bc":
            metrics.add("offline/td_error")
        if self.training.fqe_steps > 0:
            metrics.add("offline/fqe_value")
        return metrics

    def algorithm_config(self, sampled: dict[str, Any]) -> BCConfig | IQLConfig | CQLConfig:
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


def parse_overrides(pairs: list[str], **options: Any) -> dict[str, Any]:
    """`["network.hidden_sizes=[512,512]", "expectile=0.9"]` -> a nested dict (YAML values);
    `options` (dotted keys as `a__b`) that are not None are set too."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set expectile=0.9")
        set_dotted(result, key, yaml.load(raw, Loader=_SpecLoader))  # 1e-4 is a number
    for key, value in options.items():
        if value is not None:
            set_dotted(result, key.replace("__", "."), value)
    return result


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the key (or list item) at `loc`; None for a key missing from the
    file (a command-line override, a required key left out)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == part), None)
            if entry is None:
                return None
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_spec(path: Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Read and validate a spec file; `overrides` (nested dict) replace values in it."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: no arbitrary objects
        root = yaml.compose(text, Loader=_SpecLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}:1: expected a mapping of spec keys, got {type(raw).__name__}")
    _merge(raw, overrides or {})
    problems = [
        f"{path}:{line}: {'.'.join(map(str, loc))}: {message}"
        for loc, line, message in _duplicate_keys(root)
    ]
    try:
        spec = SearchSpec.model_validate(raw, context={"defer_semantic_checks": True})
        found = spec.problems()
    except ValidationError as error:
        found = []
        for issue in error.errors():
            loc = tuple(p for p in issue["loc"] if not str(p).startswith("function-after"))
            found.append(_located(loc, issue))
    if found or problems:
        for loc, message in found:
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc)
            problems.append(
                f"{path}:{line}: {key}: {message}" if line else f"{path}: {key}: {message}"
            )
        raise SpecError("invalid search spec:\n  " + "\n  ".join(problems))
    return _resolve_paths(spec, path, root)


_ALGOS = ("bc", "iql", "cql")


def _located(loc: tuple[str | int, ...], issue: Any) -> tuple[tuple[str | int, ...], str]:
    """A pydantic error as (key path in the file, message): the union tags pydantic adds
    (`search_space.alpha.float...`, `algorithm.cql.alpah`) are not keys of the file."""
    if loc == ("algorithm",) and issue["type"].startswith("union_tag"):
        return (
            "algorithm",
            "algo",
        ), f"expected one of {', '.join(map(repr, _ALGOS))} ({issue['msg']})"
    if loc[:1] == ("algorithm",) and len(loc) > 1 and loc[1] in _ALGOS:
        return ("algorithm", *loc[2:]), issue["msg"]
    return tuple(p for p in loc if p not in _PARAM_TYPES), issue["msg"]


def _duplicate_keys(
    node: yaml.Node | None, loc: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], int, str]]:
    """(key path, line, message) of every repeated mapping key (YAML keeps the last one
    silently), at the line of the repetition."""
    found: list[tuple[tuple[str | int, ...], int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in seen:
                found.append(((*loc, name), line, f"duplicate key (first at line {seen[name]})"))
            else:
                seen[name] = line
            found += _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*loc, index))
    return found


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _resolve_paths(spec: SearchSpec, spec_path: Path, root: yaml.Node | None) -> SearchSpec:
    dataset = spec.dataset
    if dataset.path is not None:
        resolved = (spec_path.parent / dataset.path).resolve()
        if resolved.is_dir():
            line = _line_of(root, ("dataset", "path"))
            raise SpecError(
                f"{spec_path}:{line}: dataset.path: {resolved} is a directory, expected a "
                "dataset file (.jsonl or .jsonl.gz)"
            )
        if not resolved.is_file():
            line = _line_of(root, ("dataset", "path"))
            raise SpecError(f"{spec_path}:{line}: dataset.path: file {resolved} does not exist")
        dataset = dataset.model_copy(update={"path": resolved})
    storage = spec.storage_path
    if "://" not in storage:
        storage = str((Path.cwd() / storage).resolve())
    mlflow = spec.mlflow.model_copy(
        update={"tracking_uri": resolve_tracking_uri(spec.mlflow.tracking_uri, storage)}
    )
    searcher = spec.searcher
    if searcher.storage is not None:
        searcher = searcher.model_copy(update={"storage": _absolute_sqlite(searcher.storage)})
    update = {"dataset": dataset, "storage_path": storage, "mlflow": mlflow, "searcher": searcher}
    return spec.model_copy(update=update)


def _absolute_sqlite(uri: str) -> str:
    """`sqlite:///relative.db` against the current folder (trials chdir)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def resolve_tracking_uri(uri: str | None, storage_path: str) -> str:
    """The absolute MLflow tracking URI of a sweep.

    `uri`, else MLFLOW_TRACKING_URI, else `sqlite:///<storage_path's parent>/mlflow.db`
    (`./runs/mlflow.db` for remote storage). Relative SQLite paths are made absolute:
    trials chdir, and MLflow's own default is relative to the current folder.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        base = Path(storage_path).parent if "://" not in storage_path else Path("runs")
        return f"sqlite:///{(Path.cwd() / base / 'mlflow.db').resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return str((Path.cwd() / uri).resolve())
    return _absolute_sqlite(uri)
