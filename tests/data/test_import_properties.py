"""Property-based: real server logs mutated at random (types, nesting, numbers, text,
truncation, spacing) are read without a traceback; each battle is refused or imported
exactly as played, and no battle is ever imported twice (issue #33)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poke_tune.data import names
from poke_tune.data.importer import NothingImportedError, import_battles
from poke_tune.data.jsonl import read_trajectories
from poke_tune.data.logs import LoggedBattle, parse_battle
from poke_tune.data.records import TrajectoryRecord
from poke_tune.data.sources import RawBattle, Refusal
from poke_tune.sim.actions import action_index
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.battles import SimulatorPool
from tests.data.test_import_hostile import _respaced
from tests.data.test_importer import _generate, server_log

FIELDS = ("inputLog", "log", "roomid", "p1rating", "p2rating", "format", "winner")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, log: dict[str, Any]) -> str:
    """One real log as JSON text, mutated one way."""
    kind = draw(
        st.sampled_from(
            ["type", "nesting", "number", "text", "choice", "truncate", "spacing", "escape"]
        )
    )
    record = dict(log)
    if kind == "type":
        record[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif kind == "nesting":
        depth = draw(st.integers(1, 3000))
        field = draw(st.sampled_from(FIELDS))
        text = json.dumps({**record, field: None})
        value = "[" * depth + json.dumps(record.get(field)) + "]" * depth
        return text.replace(f'"{field}": null', f'"{field}": {value}', 1)
    elif kind == "number":
        number = draw(st.sampled_from(["1" + "0" * 400, "1e999", "-0", "1e308", "-1e-400"]))
        return json.dumps({**record, "p1rating": None}).replace(
            '"p1rating": null', f'"p1rating": {number}', 1
        )
    elif kind in ("text", "choice"):
        field = "inputLog" if kind == "choice" else draw(st.sampled_from(["inputLog", "log"]))
        lines = list(record[field])
        index = draw(st.integers(0, len(lines) - 1))
        if kind == "choice":
            side = draw(st.sampled_from(["p1", "p2"]))
            lines[index] = f">{side} " + draw(
                st.sampled_from(["move 9", "move 1", "switch 2", "switch 7", "pass", "team 1"])
            )
        else:
            lines[index] = draw(st.text(max_size=40))
        record[field] = lines
    elif kind == "truncate":
        text = json.dumps(record)
        return text[: draw(st.integers(0, len(text) - 1))]
    elif kind == "spacing":
        record = _respaced(record)
    else:  # a JSON escape that is no character (a lone surrogate) in a name or a line
        text = json.dumps(record)
        at = draw(st.sampled_from(['"name\\": \\"', '"roomid": "', '"log": ["']))
        return text.replace(at, at + "\\ud83d", 1)
    return json.dumps(record)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("played") / "generated.jsonl"


@pytest.fixture(scope="module")
def played(generated: Path) -> list[BattleResult]:
    return _generate(generated, 3)


@pytest.fixture(scope="module")
def logs(played: list[BattleResult]) -> list[dict[str, Any]]:
    return [server_log(result) for result in played]


def test_any_mutation_parses_or_is_refused(logs: list[dict[str, Any]]) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        text = data.draw(mutated(data.draw(st.sampled_from(logs))))
        parsed = parse_battle(RawBattle("x.log.json", text.encode("utf-8", "surrogatepass")))
        assert isinstance(parsed, LoggedBattle | Refusal)
        if isinstance(parsed, LoggedBattle):  # everything kept is text a file can hold
            for line in (*parsed.input_log, *parsed.log, parsed.battle_id):
                line.encode("utf-8")

    check()


def _key(record: TrajectoryRecord) -> tuple[str, tuple[int, ...], float]:
    actions = tuple(action_index(s.action_type, s.action_target) for s in record.steps)
    return record.player, actions, record.total_reward


def test_mutated_logs_import_exactly_or_are_refused_never_twice(
    generated: Path,
    logs: list[dict[str, Any]],
    pool: SimulatorPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(names.NAME_KEY_ENV, "k" * 40)
    played = {_key(record): record.replay_id for record in read_trajectories(generated)}

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        texts = [json.dumps(log) for log in logs[:1]]
        texts += [data.draw(mutated(data.draw(st.sampled_from(logs)))) for _ in range(3)]
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "in"
            folder.mkdir()
            for number, text in enumerate(texts):
                (folder / f"{number}.log.json").write_bytes(text.encode("utf-8", "surrogatepass"))
            out = Path(scratch) / "out.jsonl"
            try:
                summary = import_battles([folder], out, pool=pool)
            except NothingImportedError as error:  # the original is first: cannot happen
                raise AssertionError(error.summary.refusals) from error
            assert summary.read == len(texts)
            assert summary.imported + summary.refused == summary.read
            records = list(read_trajectories(out))
        # Exact: every imported trajectory is one side of a battle as it was played...
        found = Counter((played.get(_key(record)), record.player) for record in records)
        assert all(battle for battle, _ in found), "an imported trajectory never played"
        # ...and no battle twice.
        assert all(n == 1 for n in found.values()), found
        assert len(records) == 2 * summary.imported

    check()
