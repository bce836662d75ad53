"""The data flywheel's spec section and plan (`tuning/loop/plan.py`): the settings checked
once, what each round trains on, which battles it generates, its sweep's spec, and the
stop rule. Fast: no battles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from poke_tune.tuning.loop.plan import (
    LoopSettings,
    gain,
    generation_recipe,
    round_parts,
    round_spec,
    stop_reason,
)
from poke_tune.tuning.records import CurvePoint, LoopRecord, RoundRecord
from poke_tune.tuning.spec import SearchSpec, SpecError
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.spec_rounds import CURVE_SEED

SEARCH_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
TINY = Path(__file__).parents[1] / "tiny.yaml"


def _spec(tmp_path: Path, **rounds: Any) -> SearchSpec:
    return load_spec(
        TINY,
        {"storage_path": str(tmp_path / "ray"), "rounds": {"count": 3, **rounds}},
    )


def _settings(tmp_path: Path, **rounds: Any) -> LoopSettings:
    return LoopSettings.of(_spec(tmp_path, **rounds))


def test_the_rounds_section_has_its_defaults(tmp_path: Path) -> None:
    rounds = _spec(tmp_path).rounds
    assert rounds is not None
    assert rounds.temperatures == [0.1, 0.2] and rounds.window is None
    assert rounds.curve_battles == 500 and rounds.curve_opponents == ["max-damage", "heuristic"]
    assert rounds.curve_seed == CURVE_SEED
    # The reference is the objective's opponent, and always on the curve.
    assert rounds.curve_against(_spec(tmp_path).objective.opponent) == [
        "max-damage",
        "heuristic",
        "random",
    ]
    assert load_spec(TINY, {"storage_path": str(tmp_path)}).rounds is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"rounds": {"count": 0}}, "rounds.count: Input should be greater than or equal to 1"),
        ({"rounds": {"temperatures": [0.0]}}, "rounds.temperatures.0: Input should be greater"),
        ({"rounds": {"window": 0}}, "rounds.window: Input should be greater than 0"),
        ({"rounds": {"curve_opponents": ["nobody"]}}, "rounds.curve_opponents.0: unknown policy"),
        ({"rounds": {"curve_seed": 20_261_202}}, "20261202 is the confirmation's seed"),
        ({"rounds": {"count": 1}, "objective": {"metric": "offline/action_match"}}, "win rate"),
        ({"rounds": {"opponents": ["nobody"]}}, "rounds.opponents.0: unknown policy"),
        (
            {"rounds": {"promotion": {"seed": CURVE_SEED}}},
            f"rounds.promotion.seed: {CURVE_SEED} is the curve's seed",
        ),
        ({"rounds": {"promotion": {"chunk": 0}}}, "rounds.promotion.chunk: Input should be"),
        ({"rounds": {"league": {"champion_share": 2}}}, "rounds.league.champion_share: Input"),
    ],
)
def test_a_bad_rounds_section_is_refused_at_its_key(
    tmp_path: Path, override: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        load_spec(TINY, {"storage_path": str(tmp_path), **override})


def test_rounds_need_a_generate_recipe_and_the_error_names_the_line(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    data = tmp_path / "data.jsonl"
    data.write_text("")
    raw["dataset"] = {"path": str(data)}
    raw["rounds"] = {"count": 2}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    line = path.read_text().splitlines().index("rounds:") + 1
    assert f"loop.yaml:{line}: rounds: the data flywheel generates" in str(error.value)


def test_the_checked_in_loop_spec_is_valid() -> None:
    spec = load_spec(SEARCH_SPACES / "cql_flywheel.yaml")
    assert spec.rounds is not None and spec.rounds.count == 3


def test_the_settings_are_the_spec_checked_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path, reference="random")
    assert settings.rounds is settings.spec.rounds
    assert settings.recipe is settings.spec.dataset.generate
    assert settings.reference == "random"
    assert settings.curve_against == ["max-damage", "heuristic", "random"]
    # A spec without a `rounds:` section has no loop: refused once, with the way out.
    plain = load_spec(TINY, {"storage_path": str(tmp_path)})
    with pytest.raises(ValueError, match="has no `rounds:` section: add one or pass --rounds"):
        LoopSettings.of(plain)


def test_window_keeps_the_last_rounds() -> None:
    files = ["r0", "r1", "r2", "r3"]
    assert round_parts(files, None) == files
    assert round_parts(files, 2) == ["r2", "r3"]
    assert round_parts(files, 9) == files


def test_each_round_generates_its_own_seeded_battles_with_the_pinned_champion(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, opponents=["max-damage"], earlier_champions=True)
    first = generation_recipe(settings, 1, "models:/poke-tune-tiny/1")
    assert first.policies == [
        "models:/poke-tune-tiny/1:softmax=0.1",
        "models:/poke-tune-tiny/1:softmax=0.2",
        "max-damage",
    ]
    assert first.battles == 400 and first.seed == 1  # the recipe's seed 0 + round
    later = generation_recipe(
        settings, 2, "models:/poke-tune-tiny/3", ["models:/poke-tune-tiny/1"]
    )
    assert later.seed == 2 and later.policies[-1] == "models:/poke-tune-tiny/1"
    assert len({first.key(), later.key(), settings.recipe.key()}) == 3
    # Like the dataset's recipe otherwise; the default pool is its behaviour policies.
    default = generation_recipe(_settings(tmp_path), 1, "models:/m/1")
    assert default.policies[2:] == ["random", "max-damage"]
    assert default.hp_shaping == settings.recipe.hp_shaping


def test_a_league_round_draws_the_champion_against_the_pool_with_its_shares(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        temperatures=[0.05, 0.2],
        opponents=["heuristic:softmax=0.1", "max-damage:softmax=0.3"],
        earlier_champions=True,
        league={"champion_share": 0.6, "earlier_share": 0.2},
    )
    earlier = ["models:/m/1", "models:/m/2"]
    recipe = generation_recipe(settings, 3, "models:/m/4", earlier)
    assert recipe.policies == [
        "models:/m/4:softmax=0.05",
        "models:/m/4:softmax=0.2",
        "heuristic:softmax=0.1",
        "max-damage:softmax=0.3",
        *earlier,
    ]
    assert recipe.league is not None and recipe.league.learners == 2
    assert recipe.league.learner_share == 0.6
    weights = recipe.league.weights
    assert weights is not None and weights[:4] == [1.0, 1.0, 1.0, 1.0]
    # The earlier champions hold 20% of the pool's weight, equally.
    assert sum(weights[4:]) / sum(weights[2:]) == pytest.approx(0.2)
    assert weights[4] == weights[5]
    league = recipe.to_league()
    assert league is not None and league.policies == 6  # fits its policies
    # Round 1 has no earlier champion: the pool is the opponents alone.
    first = generation_recipe(settings, 1, "models:/m/1")
    assert first.league is not None and first.policies[2:] == settings.rounds.opponents


def test_a_round_spec_keeps_one_model_and_warm_starts_from_the_previous_best(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, num_samples=2)
    spec = settings.spec
    folder = tmp_path / "ray" / "tiny"
    zero = round_spec(settings, 0, folder)
    assert zero.name == "tiny-r0" and zero.storage_path == str(folder)
    assert zero.dataset == spec.dataset and zero.num_samples == spec.num_samples
    assert zero.rounds is None
    best = {"expectile": 0.8, "temperature": 2.0}
    one = round_spec(settings, 1, folder, dataset=tmp_path / "combined.jsonl.gz", warm_start=best)
    assert one.name == "tiny-r1" and one.num_samples == 2
    assert one.dataset.path == tmp_path / "combined.jsonl.gz"
    assert one.searcher.warm_start[0] == best and len(one.searcher.warm_start) == 2
    # A sampler seeded apart per round: the same seed re-proposed the same points.
    assert one.searcher.seed == spec.searcher.seed + 1
    assert one.confirm.baselines == ["random"]
    for each in (zero, one):
        assert each.mlflow.registered_model == "poke-tune-tiny"
        assert each.mlflow.experiment == "tiny"
    # The spec round-trips as the experiment folder stores it.
    assert SearchSpec.model_validate_json(one.model_dump_json()) == one


def curve_point(opponent: str, won: list[bool]) -> CurvePoint:
    rate = sum(won) / len(won)
    return CurvePoint(opponent=opponent, win_rate=rate, ci_low=0.0, ci_high=1.0, won=won)


def done_round(index: int, champion_round: int, wins: int, **fields: Any) -> RoundRecord:
    won = [True] * wins + [False] * (10 - wins)
    return RoundRecord(
        index=index,
        stage="done",
        champion_round=champion_round,
        champion=f"models:/m/{champion_round + 1}",
        curve=[curve_point("random", won), curve_point("max-damage", won)],
        **fields,
    )


def test_the_stop_rule_reads_the_champions_gain_against_the_reference(tmp_path: Path) -> None:
    settings = _settings(tmp_path, min_gain=0.05)
    record = LoopRecord(rounds=[done_round(0, 0, 5), done_round(1, 1, 8)])
    assert gain(record, 0, "random") is None
    assert gain(record, 1, "random").difference == pytest.approx(0.3)  # type: ignore[union-attr]
    assert stop_reason(settings, record, 1) is None
    # A round whose champion stayed gains nothing: the loop stops, saying why.
    record.rounds.append(done_round(2, 1, 2))
    reason = stop_reason(settings, record, 2)
    assert reason is not None and "+0.000 against random" in reason and "min_gain" in reason
    # Without a min_gain, or at the last round, nothing stops early.
    assert stop_reason(_settings(tmp_path), record, 2) is None
    assert stop_reason(_settings(tmp_path, min_gain=0.05, count=2), record, 2) is None
