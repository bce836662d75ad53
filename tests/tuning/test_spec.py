"""`load_spec`: every error names the file, the line, the key path and the expectation.

Fast unit tests: small YAML files in tmp_path, no Ray.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from poke_tune.algos import CQLConfig
from poke_tune.tuning.spec import FloatParam, SearchSpec, SpecError
from poke_tune.tuning.spec_data import GenerateRecipe, LeagueRecipe
from poke_tune.tuning.spec_file import load_spec

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

BASE: dict[str, Any] = {
    "name": "unit",
    "algorithm": {"algo": "iql", "network": {"hidden_sizes": [32]}},
    "dataset": {"path": "data.jsonl"},
    "training": {"steps": 100, "eval_interval": 50, "fqe_steps": 0},
    "objective": {"metric": "offline/action_match", "mode": "max"},
    "search_space": {
        "expectile": {"type": "float", "low": 0.6, "high": 0.9},
        "temperature": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
    },
    "searcher": {"algorithm": "tpe", "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1},
    "num_samples": 4,
    "resources": {"cpu": 1, "gpu": 0},
    "storage_path": "runs/ray",
}


WriteSpec = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path) -> WriteSpec:
    """Write BASE, changed by `edit(spec_dict)`, to tmp_path/<name> (beside a data file)."""
    (tmp_path / "data.jsonl").write_text("")

    def write(edit: Callable[[dict[str, Any]], None] | None = None, name: str = "s.yaml") -> Path:
        raw = copy.deepcopy(BASE)
        if edit is not None:
            edit(raw)
        path = tmp_path / name
        # Flow style for mappings of scalars: `expectile: {type: float, ...}` on one line.
        path.write_text(yaml.safe_dump(raw, sort_keys=False, default_flow_style=None))
        return path

    return write


def key_line(path: Path, keys: tuple[str, ...]) -> int:
    """1-based line of the KEY at the end of `keys` in a YAML file."""
    node = yaml.compose(path.read_text())
    line = 1
    for key in keys:
        assert isinstance(node, yaml.MappingNode), keys
        key_node, node = next((k, v) for k, v in node.value if k.value == key)
        line = key_node.start_mark.line + 1
    return line


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


EXTRA = "Extra inputs are not permitted"

# id, edit, key path in the message, expected text
ERROR_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown-top", _set("epochs", value=3), "epochs", EXTRA),
    ("unknown-nested", _set("scheduler", "grace", value=3), "scheduler.grace", EXTRA),
    ("wrong-type", _set("num_samples", value="many"), "num_samples", "valid integer"),
    (
        "range-outside-config",
        _set("search_space", "expectile", value={"type": "float", "low": 0.4, "high": 0.9}),
        "search_space.expectile.low",
        "greater than 0.5",
    ),
    (
        "gpu-fraction",
        _set("resources", "gpu", value=1.5),
        "resources.gpu",
        "a fraction in (0, 1] or a whole number, got 1.5",
    ),
    (
        "gpu-negative",
        _set("resources", "gpu", value=-1),
        "resources.gpu",
        "greater than or equal to 0",
    ),
    ("mode", _set("objective", "mode", value="maximise"), "objective.mode", "'max'"),
    (
        "low-not-below-high",
        _set("search_space", "expectile", value={"type": "float", "low": 0.9, "high": 0.6}),
        "search_space.expectile",
        "must be below high",
    ),
    (
        "log-low-not-positive",
        _set(
            "search_space",
            "temperature",
            value={"type": "float", "low": 0, "high": 3, "log": True},
        ),
        "search_space.temperature",
        "needs low > 0",
    ),
    (
        "when-unknown-param",
        _set("search_space", "temperature", "when", value={"param": "beta", "values": [1]}),
        "search_space.temperature.when.param",
        "unknown parameter 'beta'",
    ),
    ("dataset-neither", _set("dataset", value={}), "dataset", "exactly one of"),
    (
        "dataset-both",
        _set("dataset", "generate", value={"battles": 10}),
        "dataset",
        "exactly one of",
    ),
    (
        "dataset-missing",
        _set("dataset", "path", value="nope.jsonl"),
        "dataset.path",
        "nope.jsonl does not exist",
    ),
    (
        "dataset-directory",
        _set("dataset", "path", value="."),
        "dataset.path",
        "is a directory, expected a dataset file",
    ),
    (
        "infinite-bound",
        _set("search_space", "expectile", value={"type": "float", "low": 0.6, "high": math.inf}),
        "search_space.expectile.high",
        "finite number",
    ),
    ("bool-steps", _set("training", "steps", value=True), "training.steps", "valid integer"),
    ("bool-num-samples", _set("num_samples", value=True), "num_samples", "valid integer"),
    ("string-seed", _set("searcher", "seed", value="3"), "searcher.seed", "valid integer"),
    (
        "grid-with-ranges",
        _set("searcher", "algorithm", value="grid"),
        "search_space.expectile.type",
        "the grid searcher needs categorical parameters",
    ),
    (
        "unknown-algo",
        _set("algorithm", "algo", value="ppo"),
        "algorithm.algo",
        "expected one of 'bc', 'iql', 'cql'",
    ),
    ("unknown-algorithm-key", _set("algorithm", "alpah", value=1.0), "algorithm.alpah", EXTRA),
    (
        "format-without-generated-teams",
        _set("dataset", value={"generate": {"battles": 10, "battle_format": "gen1ou"}}),
        "dataset.generate.battle_format",
        "random-team formats",
    ),
    (
        "unknown-search-parameter",
        _set("search_space", "alpah", value={"type": "float", "low": 0.1, "high": 1.0}),
        "search_space.alpah",
        "'alpah' is not a iql hyperparameter",
    ),
]


CASES = [pytest.param(edit, key, text, id=case_id) for case_id, edit, key, text in ERROR_CASES]


def _error(path: Path, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides)
    return str(caught.value)


@pytest.mark.parametrize(("edit", "key", "text"), CASES)
def test_error_names_file_key_and_expectation(
    write_spec: WriteSpec, edit: Callable[[dict[str, Any]], None], key: str, text: str
) -> None:
    path = write_spec(edit)
    message = _error(path)
    assert str(path) in message
    assert f"{key}: " in message
    assert text in message


@pytest.mark.parametrize(("edit", "key", "text"), CASES)
def test_error_points_at_the_line_of_its_key(
    write_spec: WriteSpec, edit: Callable[[dict[str, Any]], None], key: str, text: str
) -> None:
    path = write_spec(edit)
    line = key_line(path, tuple(key.split(".")))
    assert f"{path}:{line}: {key}: " in _error(path)


def test_block_mapping_value_error_points_at_its_key(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("")
    path = tmp_path / "s.yaml"
    raw = copy.deepcopy(BASE)
    raw["scheduler"]["grace"] = {"a": 1}
    path.write_text(yaml.safe_dump(raw, sort_keys=False, default_flow_style=False))
    line = key_line(path, ("scheduler", "grace"))
    assert f"{path}:{line}: scheduler.grace: " in _error(path)


def test_several_errors_are_reported_together(write_spec: WriteSpec) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["num_samples"] = "many"
        raw["objective"]["mode"] = "maximise"

    message = _error(write_spec(edit))
    assert "num_samples" in message and "objective.mode" in message


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_checked_in_spec_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.search_space
    for point in spec.searcher.warm_start:
        spec.algorithm_config(point)


def test_record_matchups_are_yaml_pairs(write_spec: WriteSpec) -> None:
    pair = ["poke-env:simple-heuristics", "heuristic:softmax=0.1"]

    def record(matchups: list[list[str]]) -> Callable[[dict[str, Any]], None]:
        def edit(raw: dict[str, Any]) -> None:
            raw["dataset"] = {"import": {"record": {"battles": 4, "matchups": matchups}}}

        return edit

    spec = load_spec(write_spec(record([pair])))
    assert spec.dataset.import_ is not None and spec.dataset.import_.record is not None
    assert spec.dataset.import_.record.matchups == [tuple(pair)]
    assert "dataset.import.record.matchups.0" in _error(write_spec(record([pair[:1]])))


def test_the_algorithm_block_is_its_typed_config() -> None:
    spec = load_spec(SEARCH_SPACES / "cql_alpha.yaml")
    assert isinstance(spec.algorithm, CQLConfig)
    assert spec.algorithm.network.kind == "action"
    trial = spec.algorithm_config({"alpha": 0.3})
    assert isinstance(trial, CQLConfig) and trial.alpha == 0.3 and trial.network.kind == "action"


def test_there_are_checked_in_specs() -> None:
    names = {path.stem for path in SEARCH_SPACES.glob("*.yaml")}
    assert {"cql_alpha", "cql_lagrange", "iql_expectile", "iql_joint", "iql_temperature"} <= names


def test_overrides_replace_values(write_spec: WriteSpec) -> None:
    overrides = {"num_samples": 9, "scheduler": {"type": "fifo"}, "training": {"steps": 200}}
    spec = load_spec(write_spec(), overrides)
    assert spec.num_samples == 9
    assert spec.scheduler.type == "fifo"
    assert spec.scheduler.grace_period == 1  # nested overrides merge, not replace
    assert spec.training.steps == 200 and spec.training.eval_interval == 50


def test_invalid_override_is_reported(write_spec: WriteSpec) -> None:
    path = write_spec()
    message = _error(path, {"num_samples": 0})
    assert str(path) in message and "num_samples: Input should be greater than 0" in message


def test_unknown_override_key_has_no_line(write_spec: WriteSpec) -> None:
    path = write_spec()
    message = _error(path, {"scheduler": {"grace": 1}})
    assert f"{path}: scheduler.grace: Extra inputs are not permitted" in message


def test_relative_paths_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_spec: WriteSpec
) -> None:
    data = tmp_path / "data" / "d.jsonl"
    data.parent.mkdir()
    data.write_text("")
    (tmp_path / "specs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    path = write_spec(_set("dataset", "path", value="../data/d.jsonl"), name="specs/s.yaml")
    spec = load_spec(path)
    assert spec.dataset.path == data.resolve()
    assert Path(spec.storage_path).is_absolute()
    assert Path(spec.storage_path) == tmp_path / "elsewhere" / "runs" / "ray"


def test_absolute_dataset_path_is_kept(tmp_path: Path, write_spec: WriteSpec) -> None:
    data = (tmp_path / "data.jsonl").resolve()
    spec = load_spec(write_spec(_set("dataset", "path", value=str(data))))
    assert spec.dataset.path == data


def test_generate_recipe_needs_no_file(write_spec: WriteSpec) -> None:
    spec = load_spec(write_spec(_set("dataset", value={"generate": {"battles": 10}})))
    assert spec.dataset.path is None and spec.dataset.generate is not None
    assert spec.dataset.generate.battles == 10


def test_storage_uri_is_kept(write_spec: WriteSpec) -> None:
    spec = load_spec(write_spec(_set("storage_path", value="s3://bucket/ray")))
    assert str(spec.storage_path) == "s3://bucket/ray"


@pytest.mark.parametrize("gpu", [0.25, 0.5, 1, 2])
def test_gpu_fractions_and_whole_numbers_are_accepted(write_spec: WriteSpec, gpu: float) -> None:
    assert load_spec(write_spec(_set("resources", "gpu", value=gpu))).resources.gpu == gpu


def test_categorical_choices_are_each_checked(write_spec: WriteSpec) -> None:
    edit = _set("search_space", "num_critics", value={"type": "categorical", "choices": [1, 0]})
    assert "greater than or equal to 1" in _error(write_spec(edit))


def test_when_condition_on_a_known_parameter(write_spec: WriteSpec) -> None:
    when = {"param": "expectile", "values": [0.7]}
    spec = load_spec(write_spec(_set("search_space", "temperature", "when", value=when)))
    condition = spec.search_space["temperature"].when
    assert condition is not None and condition.param == "expectile"


def test_spec_validates_without_a_file() -> None:
    spec = SearchSpec.model_validate(BASE | {"dataset": {"generate": {"battles": 5}}})
    assert spec.algorithm_config({"expectile": 0.8}).expectile == 0.8


def test_an_objective_no_trial_reports_is_refused(write_spec: WriteSpec) -> None:
    path = write_spec(_set("training", "fqe_steps", value=0))
    message = _error(path, {"objective": {"metric": "offline/fqe_value"}})
    assert "objective.metric: 'offline/fqe_value' is not reported" in message


@pytest.mark.parametrize(
    "edit", [_set("algorithm", "alpah", value=1.0), _set("algorithm", "algo", value="ppo")]
)
def test_an_algorithm_error_is_reported_once_at_its_own_key(
    write_spec: WriteSpec, edit: Callable[[dict[str, Any]], None]
) -> None:
    message = _error(write_spec(edit))
    assert len(message.splitlines()) == 2  # the heading and one problem
    assert "search_space" not in message


def _warm_start(*points: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set("searcher", "warm_start", value=list(points))


def _warm_start_line(path: Path, index: int, key: str) -> int:
    node = yaml.compose(path.read_text())
    assert isinstance(node, yaml.MappingNode)
    searcher = next(v for k, v in node.value if k.value == "searcher")
    points = next(v for k, v in searcher.value if k.value == "warm_start")
    key_node = next(k for k, _ in points.value[index].value if k.value == key)
    return int(key_node.start_mark.line) + 1


@pytest.mark.parametrize(
    ("point", "text"),
    [
        ({"expectile": 0.95}, "0.95 is outside the range [0.6, 0.9]"),
        ({"expectile": "high"}, "'high' is not a float"),
        ({"beta": 3.0}, "unknown parameter 'beta'; expected one of expectile, temperature"),
    ],
)
def test_a_warm_start_point_outside_the_space_is_refused_at_its_line(
    write_spec: WriteSpec, point: dict[str, Any], text: str
) -> None:
    path = write_spec(_warm_start({"expectile": 0.7, "temperature": 3.0}, point))
    key = next(iter(point))
    line = _warm_start_line(path, 1, key)
    assert f"{path}:{line}: searcher.warm_start.1.{key}: {text}" in _error(path)


def test_warm_start_points_inside_the_space_are_accepted(write_spec: WriteSpec) -> None:
    spec = load_spec(write_spec(_warm_start({"expectile": 0.9, "temperature": 1})))
    assert spec.searcher.warm_start == [{"expectile": 0.9, "temperature": 1}]


def test_grid_with_categorical_parameters_is_accepted(write_spec: WriteSpec) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["searcher"]["algorithm"] = "grid"
        raw["search_space"] = {"expectile": {"type": "categorical", "choices": [0.7, 0.9]}}

    assert load_spec(write_spec(edit)).searcher.algorithm == "grid"


def test_a_duplicate_key_is_refused_at_its_second_line(write_spec: WriteSpec) -> None:
    path = write_spec()
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("num_samples:"))
    lines.insert(first + 1, "num_samples: 64")
    path.write_text("\n".join(lines) + "\n")
    message = _error(path)
    assert f"{path}:{first + 2}: num_samples: duplicate key (first at line {first + 1})" in message


def test_a_nested_duplicate_key_is_refused(write_spec: WriteSpec) -> None:
    path = write_spec()
    text = path.read_text().replace("grace_period: 1", "grace_period: 1, grace_period: 3")
    path.write_text(text)
    assert "scheduler.grace_period: duplicate key" in _error(path)


def test_confirmation_must_use_fresh_battles(write_spec: WriteSpec) -> None:
    def same_seed(raw: dict[str, Any]) -> None:
        raw["confirm"] = {"seed": raw.get("objective", {}).get("seed", 20_261_121)}

    with pytest.raises(SpecError, match=r"confirm\.seed: .*fresh"):
        load_spec(write_spec(same_seed))


def test_unknown_opponent_and_baseline_are_refused_at_their_keys(write_spec: WriteSpec) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["objective"] = {"metric": "eval/win_rate", "opponent": "god-mode"}
        raw["confirm"] = {"baselines": ["random", "mystery"]}

    with pytest.raises(SpecError) as raised:
        load_spec(write_spec(edit))
    message = str(raised.value)
    assert "objective.opponent: unknown policy 'god-mode'" in message
    assert "confirm.baselines.1: unknown policy 'mystery'" in message


def test_exponent_notation_reads_as_a_number(write_spec: WriteSpec) -> None:
    path = write_spec()
    text = path.read_text().replace("low: 1.0, high: 10.0", "low: 1e-1, high: 1E+1")
    assert "1e-1" in text
    path.write_text(text)
    temperature = load_spec(path).search_space["temperature"]
    assert isinstance(temperature, FloatParam)
    assert (temperature.low, temperature.high) == (0.1, 10.0)


def test_overrides_read_exponents_as_numbers() -> None:
    from poke_tune.tuning.spec_file import parse_overrides

    assert parse_overrides(["learning_rate=1e-4", "network.hidden_sizes=[64]"]) == {
        "learning_rate": 1e-4,
        "network": {"hidden_sizes": [64]},
    }


def test_generated_datasets_are_keyed_by_recipe_and_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from poke_tune.tuning import spec_data as spec_module

    recipe = GenerateRecipe(battles=10)
    key = recipe.key()
    assert key == GenerateRecipe(battles=10).key()
    assert key != GenerateRecipe(battles=10, hp_shaping=1.0).key()
    monkeypatch.setattr(spec_module, "ENCODER_VERSION", "obs-v0")
    assert recipe.key() != key  # a file another encoder wrote is another dataset


def test_a_league_is_part_of_the_key_and_checked_against_the_policies() -> None:
    plain = GenerateRecipe(battles=10, policies=["heuristic", "random", "max-damage"])
    league = {"learners": 1, "learner_share": 0.5}
    drawn = plain.model_copy(update={"league": LeagueRecipe(**league)})
    assert drawn.key() != plain.key()
    for bad, message in [
        ({"learners": 3, "learner_share": 0.5}, "at least one policy for the pool"),
        ({"learners": 1, "learner_share": 0.5, "weights": [1, 2]}, "one positive weight"),
    ]:
        with pytest.raises(ValueError, match=message):
            GenerateRecipe(battles=10, policies=plain.policies, league=bad)


def test_a_registered_behaviour_policy_is_keyed_with_its_registry() -> None:
    # models:/x/1 of another MLflow store is another policy: a second loop with its own
    # store once reused the battles of the first loop's champions of the same names.
    learned = GenerateRecipe(battles=10, policies=["models:/m/1:softmax=0.1", "random"])
    assert learned.key("sqlite:///a/mlflow.db") != learned.key("sqlite:///b/mlflow.db")
    assert learned.key("sqlite:///a/mlflow.db") == learned.key("sqlite:///a/mlflow.db")
    built_in = GenerateRecipe(battles=10)
    assert built_in.key("sqlite:///a/mlflow.db") == built_in.key()  # cached files stay valid
