"""A spec's dataset from logged battles: `dataset.import` (paths and a `record` recipe),
imported once and cached by content, alone or combined with a `generate` recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from poke_tune.data.generate import generate_dataset
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.datasets import prepare_dataset
from poke_tune.tuning.spec import SpecError
from poke_tune.tuning.spec_data import RecordRecipe
from poke_tune.tuning.spec_file import load_spec
from tests.data.test_importer import FORMAT, server_log

TINY = Path(__file__).with_name("tiny.yaml")


@pytest.fixture(scope="module")
def battles(tmp_path_factory: pytest.TempPathFactory) -> list[BattleResult]:
    results: list[BattleResult] = []
    generate_dataset(
        tmp_path_factory.mktemp("generated") / "data.jsonl",
        policies=["random", "max-damage"],
        battles=4,
        seed=11,
        num_workers=1,
        on_result=results.append,
        keep_logs=True,
    )
    return sorted(results, key=lambda r: r.spec.index)


def write_logs(results: list[BattleResult], folder: Path) -> None:
    """The battles as a server's `logs/` folder holds them."""
    day = folder / "2026-12" / FORMAT / "2026-12-06"
    day.mkdir(parents=True)
    for result in results:
        (day / f"{FORMAT}-{result.spec.index}.log.json").write_text(json.dumps(server_log(result)))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache (so nothing imported by an earlier run is found), the simulator kept."""
    monkeypatch.setenv("POKE_TUNE_SHOWDOWN_DIR", str(_installed_simulator()))
    monkeypatch.setenv("POKE_TUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _installed_simulator() -> Path:
    from poke_tune.sim.runtime import find_runtime

    return find_runtime().package_dir


def _spec_file(tmp_path: Path, dataset: dict[str, object]) -> Path:
    spec = yaml.safe_load(TINY.read_text())
    spec["dataset"] = dataset
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_import_is_built_once_and_cached_by_content(
    tmp_path: Path, cache: Path, battles: list[BattleResult]
) -> None:
    write_logs(battles, tmp_path / "logs")
    spec = load_spec(_spec_file(tmp_path, {"import": {"paths": ["logs"]}}))
    assert spec.dataset.import_ is not None
    assert spec.dataset.import_.paths == [tmp_path / "logs"]  # relative to the spec file

    dataset = prepare_dataset(spec.dataset)
    assert dataset.num_trajectories == 2 * len(battles)
    assert dataset.header.generator["import"]["sides"] == "both"
    [imported] = (cache / "imported").iterdir()
    built = imported.stat().st_mtime_ns
    prepare_dataset(spec.dataset)  # found in the cache, not imported again
    assert [p.stat().st_mtime_ns for p in (cache / "imported").iterdir()] == [built]

    (tmp_path / "logs" / "2026-12" / FORMAT / "2026-12-06" / "more.log.json").write_text(
        json.dumps(server_log(battles[0], names=("someone", "else")))
    )
    prepare_dataset(spec.dataset)  # other content: another import
    assert len(list((cache / "imported").iterdir())) == 2


def test_an_import_and_a_generate_recipe_make_one_dataset(
    tmp_path: Path, cache: Path, battles: list[BattleResult]
) -> None:
    write_logs(battles, tmp_path / "logs")
    generate = {"battles": 2, "policies": ["random"], "seed": 5}
    spec = load_spec(_spec_file(tmp_path, {"import": {"paths": ["logs"]}, "generate": generate}))
    dataset = prepare_dataset(spec.dataset)
    assert dataset.num_trajectories == 2 * len(battles) + 2 * 2
    parts = dataset.header.generator["parts"]
    assert len(parts) == 2 and "import" in json.dumps(parts) and "policies" in json.dumps(parts)


def test_a_record_recipe_plays_once_through_the_recorder_it_is_handed(
    tmp_path: Path, cache: Path, battles: list[BattleResult]
) -> None:
    spec = load_spec(_spec_file(tmp_path, {"import": {"record": {"battles": 4}}}))
    with pytest.raises(ValueError, match="only `poke-tune run` can start"):
        prepare_dataset(spec.dataset)
    calls: list[RecordRecipe] = []

    def recorder(recipe: RecordRecipe, folder: Path) -> None:
        # Stands in for the play layer's local server: writes server logs of real battles.
        calls.append(recipe)
        write_logs(battles[: recipe.battles], folder)

    dataset = prepare_dataset(spec.dataset, recorder=recorder)
    assert dataset.num_trajectories == 2 * len(battles)
    prepare_dataset(spec.dataset, recorder=recorder)
    assert len(calls) == 1  # the recorded logs are kept in the cache
    assert [p.parent.name for p in (cache / "recorded").rglob("*.log.json")] == ["2026-12-06"] * 4


def test_import_sources_are_checked_where_the_spec_names_them(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, {"import": {"paths": ["missing-logs"]}})
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: dataset.import.paths\[0\]: .* does not"):
        load_spec(path)
    with pytest.raises(SpecError, match="an import needs `paths`, a `record` recipe"):
        load_spec(_spec_file(tmp_path, {"import": {}}))
    with pytest.raises(SpecError, match="import_"):
        load_spec(_spec_file(tmp_path, {"import_": {"paths": ["x"]}}))


def test_the_cache_key_follows_content_and_settings_not_the_folder(tmp_path: Path) -> None:
    from poke_tune.tuning.spec_data import ImportRecipe

    recipe = ImportRecipe(paths=[tmp_path])
    assert recipe.key("abc") == ImportRecipe(paths=[tmp_path / "elsewhere"]).key("abc")
    assert recipe.key("abc") != recipe.key("abd")
    assert recipe.key("abc") != ImportRecipe(paths=[tmp_path], sides="winner").key("abc")
    assert cache_dir().name  # the default cache resolves without the environment
