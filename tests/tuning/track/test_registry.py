"""`promote` against a real file-backed MLflow store: every branch of the champion rule.

Model versions are registered without a logged model (a bare source path): `promote`
reads and writes only the registry (aliases, tags, descriptions), so that is enough. The
champion replayed on the confirmation battles is a real logged model (a slow test).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from poke_tune.eval.paired import PairedDifference
from poke_tune.eval.winrate import WinRate
from poke_tune.tuning.confirm.confirm import Confirmation, Standing
from poke_tune.tuning.confirm.report import verdict
from poke_tune.tuning.policies import fluent_tracking_uri
from poke_tune.tuning.records import TrialRow
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.track.registry import (
    CHAMPION,
    current_champion,
    objective_tag,
    promote,
    register,
    registered_name,
    replayable_champion,
)

TINY = Path(__file__).parents[1] / "tiny.yaml"
_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (its schema takes a while to create); every test
    registers its own model name in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture
def client(store: str) -> MlflowClient:
    return MlflowClient(store)


def _spec(store: str, **overrides: Any) -> SearchSpec:
    return load_spec(
        TINY,
        {"name": f"reg{next(_names)}", "mlflow": {"tracking_uri": store}, **overrides},
    )


def _version(client: MlflowClient, spec: SearchSpec, tmp_path: Path, **tags: str) -> str:
    name = registered_name(spec)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = str(
        client.create_model_version(name, source=str(tmp_path / "m"), run_id=None).version
    )
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def _crown(client: MlflowClient, spec: SearchSpec, version: str) -> None:
    client.set_registered_model_alias(registered_name(spec), CHAMPION, version)


def _crowned_and_new(
    client: MlflowClient, spec: SearchSpec, tmp_path: Path, **champion_tags: str
) -> tuple[str, str]:
    """A champion version (tagged with `champion_tags`) and a new version after it."""
    champion = _version(client, spec, tmp_path, **champion_tags)
    _crown(client, spec, champion)
    return champion, _version(client, spec, tmp_path)


def _champion(client: MlflowClient, spec: SearchSpec) -> str | None:
    found = current_champion(client, registered_name(spec))
    return None if found is None else str(found.version)


def _tags(client: MlflowClient, spec: SearchSpec, version: str) -> dict[str, str]:
    return dict(client.get_model_version(registered_name(spec), version).tags)


def _row(score: float | None = 0.6) -> TrialRow:
    return TrialRow("t1", {"expectile": 0.7}, score, "completed", 3, None)


def _gap(difference: float, half: float = 0.05) -> PairedDifference:
    return PairedDifference(difference, difference - half, difference + half, 60, 9, 3)


def _confirmation(
    *, vs_baseline: PairedDifference | None, vs_champion: PairedDifference | None
) -> Confirmation:
    result = WinRate("t1", "random", 60, 42, 18, 0, 0.7, 0.57, 0.8, 30.0, 0, 1.0)
    winner = Standing(
        name="t1", role="candidate", trial_id="t1", result=result, vs_best_baseline=vs_baseline
    )
    baseline_result = WinRate("random", "random", 60, 30, 30, 0, 0.5, 0.38, 0.62, 30.0, 0, 1.0)
    baseline = Standing(name="random", role="baseline", result=baseline_result)
    return Confirmation("random", 7, 60, [winner, baseline], "t1", "random", vs_champion, 120, 120)


def test_a_winner_that_does_not_beat_the_best_baseline_is_not_promoted(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    before, version = _crowned_and_new(client, spec, tmp_path)
    # +0.05 but the interval includes 0: not beyond the interval, even though it beats
    # the champion.
    confirmation = _confirmation(vs_baseline=_gap(0.05, 0.08), vs_champion=_gap(0.2))
    promotion = promote(client, spec, version, _row(), confirmation)
    assert not promotion.promoted
    assert promotion.reason == (
        "does not beat the best baseline random beyond the interval (+0.050 [-0.030, +0.130])"
    )
    assert _champion(client, spec) == before
    tags = _tags(client, spec, version)
    assert tags["promotion"] == "not promoted: " + promotion.reason
    assert tags["confirm.vs_random"] == "+0.050 [-0.030, +0.130]"


def test_without_a_champion_a_winner_below_the_baselines_is_still_not_promoted(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    version = _version(client, spec, tmp_path)
    confirmation = _confirmation(vs_baseline=_gap(-0.1), vs_champion=None)
    promotion = promote(client, spec, version, _row(), confirmation)
    assert not promotion.promoted and "best baseline random" in promotion.reason
    assert _champion(client, spec) is None


@pytest.mark.parametrize("difference", [0.03, 0.0, -0.1])  # 0.03: ahead, inside the interval
def test_a_winner_that_does_not_beat_the_current_champion_is_not_promoted(
    client: MlflowClient, store: str, tmp_path: Path, difference: float
) -> None:
    spec = _spec(store)
    before, version = _crowned_and_new(client, spec, tmp_path)
    confirmation = _confirmation(vs_baseline=_gap(0.2), vs_champion=_gap(difference))
    promotion = promote(client, spec, version, _row(), confirmation)
    assert not promotion.promoted
    assert promotion.reason.startswith(
        f"does not beat the current champion v{before} beyond the interval ("
    )
    assert "current champion" in _tags(client, spec, version)["promotion"]
    assert _champion(client, spec) == before


def test_a_winner_that_beats_baselines_and_champion_takes_the_alias(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    before, version = _crowned_and_new(client, spec, tmp_path)
    confirmation = _confirmation(vs_baseline=_gap(0.2), vs_champion=_gap(0.1))
    promotion = promote(client, spec, version, _row(), confirmation)
    assert promotion.promoted
    assert promotion.reason == (
        "beats the best baseline and the previous champion (+0.100 [+0.050, +0.150])"
    )
    assert (promotion.model, promotion.version) == (registered_name(spec), version)
    assert _champion(client, spec) == version
    tags = _tags(client, spec, version)
    assert {key: value for key, value in tags.items() if key.startswith("confirm.")} == {
        "confirm.opponent": "random",
        "confirm.seed": "7",
        "confirm.battles": "60",
        "confirm.win_rate": "0.7000",
        "confirm.ci": "[0.5700, 0.8000]",
        "confirm.vs_random": "+0.200 [+0.150, +0.250]",
        "confirm.vs_previous_champion": "+0.100 [+0.050, +0.150]",
    }
    assert tags["promotion"] == "promoted: " + promotion.reason
    description = client.get_model_version(registered_name(spec), version).description
    assert description == verdict(confirmation) + "\n\npromoted: " + promotion.reason
    assert "BEATS the best baseline random" in description
    # The former champion is untouched.
    assert "promotion" not in _tags(client, spec, before)


def test_a_champion_that_was_not_replayed_is_named_in_the_reason(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    before, version = _crowned_and_new(client, spec, tmp_path)
    confirmation = _confirmation(vs_baseline=_gap(0.2), vs_champion=None)
    promotion = promote(client, spec, version, _row(), confirmation)
    assert promotion.promoted and _champion(client, spec) == version
    assert promotion.reason == (
        f"beats the best baseline; the previous champion v{before} was not replayed"
    )


def test_the_first_winner_that_beats_the_baselines_becomes_champion(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    version = _version(client, spec, tmp_path)
    promotion = promote(
        client, spec, version, _row(), _confirmation(vs_baseline=_gap(0.2), vs_champion=None)
    )
    assert promotion.promoted and promotion.reason == "beats the best baseline"
    assert _champion(client, spec) == version
    assert "confirm.vs_previous_champion" not in _tags(client, spec, version)


@pytest.mark.parametrize(
    ("vs_baseline", "outcome"),
    [(0.2, "beats the best baseline"), (-0.2, "does not beat the best baseline random")],
)
def test_the_champion_confirmed_again_stays_champion_with_only_the_new_numbers(
    client: MlflowClient, store: str, tmp_path: Path, vs_baseline: float, outcome: str
) -> None:
    spec = _spec(store)
    # Confirmed earlier against another baseline and a champion before it.
    version = _version(
        client,
        spec,
        tmp_path,
        **{
            "confirm.vs_bc": "+0.300 [+0.200, +0.400]",
            "confirm.vs_previous_champion": "+0.100 [+0.050, +0.150]",
            "confirm.win_rate": "0.9000",
            "objective": "kept",
        },
    )
    _crown(client, spec, version)
    # The new confirmation says it is worse than "the current champion", i.e. itself.
    confirmation = _confirmation(vs_baseline=_gap(vs_baseline), vs_champion=_gap(-0.2))
    promotion = promote(client, spec, version, _row(), confirmation)
    assert promotion.promoted
    assert promotion.reason.startswith(f"already the champion; this confirmation: {outcome}")
    assert "current champion" not in promotion.reason  # not compared with itself
    assert _champion(client, spec) == version
    tags = _tags(client, spec, version)
    assert "confirm.vs_bc" not in tags and "confirm.vs_previous_champion" not in tags
    assert tags["confirm.win_rate"] == "0.7000"
    assert tags["confirm.vs_random"] == _interval(_gap(vs_baseline))
    assert tags["objective"] == "kept"  # only confirm.* tags are replaced
    assert tags["promotion"] == "promoted: " + promotion.reason


def _interval(gap: PairedDifference) -> str:
    return f"{gap.difference:+.3f} [{gap.ci_low:+.3f}, {gap.ci_high:+.3f}]"


def test_without_confirmation_the_champion_keeps_the_alias(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    version = _version(client, spec, tmp_path)
    _crown(client, spec, version)
    promotion = promote(client, spec, version, _row(), None)
    assert promotion.promoted and promotion.reason == "already the champion"
    assert _champion(client, spec) == version


def test_without_confirmation_or_champion_the_first_version_is_promoted(
    client: MlflowClient, store: str, tmp_path: Path
) -> None:
    spec = _spec(store)
    version = _version(client, spec, tmp_path)
    promotion = promote(client, spec, version, _row(), None)
    assert promotion.promoted and promotion.reason == "first registered version"
    assert _champion(client, spec) == version
    assert _tags(client, spec, version)["promotion"] == "promoted: first registered version"
    description = client.get_model_version(registered_name(spec), version).description
    assert description == "promoted: first registered version"


@pytest.mark.parametrize(
    ("mode", "score", "promoted"),
    [
        ("max", 0.6, True),
        ("max", 0.4, False),
        ("max", 0.5, False),  # a tie does not take the alias
        ("min", 0.4, True),
        ("min", 0.6, False),
    ],
)
def test_without_confirmation_the_objective_value_decides_on_the_same_objective(
    client: MlflowClient,
    store: str,
    tmp_path: Path,
    mode: str,
    score: float,
    promoted: bool,
) -> None:
    spec = _spec(store, objective={"metric": "eval/win_rate", "mode": mode, "opponent": "random"})
    before, version = _crowned_and_new(
        client, spec, tmp_path, objective=objective_tag(spec.objective), objective_value="0.5"
    )
    promotion = promote(client, spec, version, _row(score), None)
    assert promotion.promoted is promoted
    assert promotion.reason == f"objective {score:.4g} vs the champion's 0.5"
    assert _champion(client, spec) == (version if promoted else before)
    assert _tags(client, spec, version)["promotion"] == (
        ("promoted: " if promoted else "not promoted: ") + promotion.reason
    )


@pytest.mark.parametrize(
    ("champion_tags", "score"),
    [
        ({"objective": "offline/fqe_value (max)", "objective_value": "0.1"}, 0.9),
        ({}, 0.9),  # a champion registered by hand: nothing recorded
        ("same", None),  # a winner without a score
    ],
)
def test_without_confirmation_a_champion_on_another_objective_is_not_comparable(
    client: MlflowClient,
    store: str,
    tmp_path: Path,
    champion_tags: dict[str, str] | str,
    score: float | None,
) -> None:
    spec = _spec(store)
    if champion_tags == "same":
        champion_tags = {"objective": objective_tag(spec.objective), "objective_value": "0.1"}
    assert isinstance(champion_tags, dict)
    before, version = _crowned_and_new(client, spec, tmp_path, **champion_tags)
    promotion = promote(client, spec, version, _row(score), None)
    assert not promotion.promoted
    assert "not comparable" in promotion.reason
    assert _champion(client, spec) == before
    assert "not comparable" in _tags(client, spec, version)["promotion"]


@pytest.mark.slow  # logs a real pyfunc model and loads it
def test_a_champion_of_another_encoder_version_is_not_replayed(
    learned_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    spec = _spec(store)
    name = registered_name(spec)
    row = TrialRow("t1", {"alpha": 0.1}, 0.6, "completed", 3, learned_checkpoint)
    with fluent_tracking_uri(store):
        run_id = mlflow.start_run().info.run_id
        mlflow.end_run()
    _crown(client, spec, register(client, spec, "e", row, run_id))
    champion = replayable_champion(client, name, store)
    assert champion is not None and champion.name == "champion v1"

    # The same weights, as saved by a poke-tune that encoded observations differently.
    state = torch.load(learned_checkpoint, weights_only=True)
    (logged,) = (tmp_path / "mlruns").rglob(learned_checkpoint.name)
    torch.save({**state, "encoder_version": "obs-v0"}, logged)
    with caplog.at_level(logging.WARNING):
        assert replayable_champion(client, name, store) is None
    assert "champion v1 is not replayed" in caplog.text
    assert "trained on obs-v0" in caplog.text
