"""`data import`: logged battles re-simulated into the same trajectories `generate` writes,
verified or refused with a reason, names and chat never stored."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poke_tune.data import importer
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.data.importer import NothingImportedError, import_battles
from poke_tune.data.jsonl import read_trajectories
from poke_tune.data.records import DatasetError, TrajectoryRecord
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.replay import spectator_log

FORMAT = "gen9randombattle"
KEY = b"0123456789abcdef0123456789abcdef"


def server_log(result: BattleResult, names: tuple[str, str] = ("p1", "p2")) -> dict[str, Any]:
    """A battle written as a Showdown server writes it (`logBattle`): exact-HP log lines,
    the input log, the room id; optionally under other player names."""
    input_log = list(result.input_log)
    log = spectator_log(result.log, "omniscient")
    for side, name in zip(("p1", "p2"), names, strict=True):
        input_log = [
            line.replace(f'"name":"{side}"', f'"name":"{name}"')
            if line.startswith(f">player {side}")
            else line
            for line in input_log
        ]
        # The simulator names sides in `|win|` and in side conditions (`p2: NAME`).
        log = [
            f"|win|{name}"
            if line == f"|win|{side}"
            else line.replace(f"{side}: {side}|", f"{side}: {name}|")
            for line in log
        ]
    return {
        "winner": "",
        "turns": result.turns,
        "p1": names[0],
        "p2": names[1],
        "inputLog": input_log,
        "log": ["|j|☆" + names[0], "|t:|1796567528", *log],
        "roomid": f"battle-{FORMAT}-{result.spec.index}",
        "format": FORMAT,
        "p1rating": None,
        "p2rating": None,
    }


def replay_json(result: BattleResult) -> dict[str, Any]:
    """The same battle as the replay site serves it: public log and input log as strings."""
    return {
        "id": f"{FORMAT}-{result.spec.index}",
        "format": "[Gen 9] Random Battle",
        "players": ["p1", "p2"],
        "log": "\n".join(spectator_log(result.log, "public")),
        "inputlog": "\n".join(result.input_log),
        "rating": 1500 + result.spec.index,
        "uploadtime": 1796567528,
    }


def _generate(path: Path, battles: int, max_turns: int = 200) -> list[BattleResult]:
    results: list[BattleResult] = []
    generate_dataset(
        path,
        policies=["random", "max-damage", "heuristic:softmax=0.3"],
        battles=battles,
        seed=3,
        max_turns=max_turns,
        num_workers=1,
        on_result=results.append,
        keep_logs=True,
    )
    return sorted(results, key=lambda r: r.spec.index)


def _write_logs(folder: Path, results: list[BattleResult]) -> Path:
    """Each battle as a server log file in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        (folder / f"{result.spec.index}.log.json").write_text(json.dumps(server_log(result)))
    return folder


def _by_battle(path: Path, prefix: str) -> dict[tuple[str, str], TrajectoryRecord]:
    return {
        (r.replay_id.rsplit("-", 1)[-1], r.player): r
        for r in read_trajectories(path)
        if r.replay_id.startswith(prefix)
    }


def assert_same_trajectories(generated: Path, imported: Path) -> None:
    expected = _by_battle(generated, FORMAT)
    found = _by_battle(imported, FORMAT)
    assert found.keys() == expected.keys()
    for key, want in expected.items():
        got = found[key]
        assert len(got.steps) == len(want.steps), key
        for a, b in zip(want.steps, got.steps, strict=True):
            np.testing.assert_array_equal(a.observation, b.observation)
            np.testing.assert_array_equal(a.action_mask, b.action_mask)
            assert (a.action_type, a.action_target, a.reward, a.done) == (
                b.action_type,
                b.action_target,
                b.reward,
                b.done,
            ), key
        assert (got.truncated, got.total_reward) == (want.truncated, want.total_reward)
        if want.truncated:
            np.testing.assert_array_equal(want.final_observation, got.final_observation)
            np.testing.assert_array_equal(want.final_action_mask, got.final_action_mask)


@pytest.mark.parametrize(("battles", "max_turns"), [(18, 200), (8, 6)])
def test_generated_battles_written_as_server_logs_import_to_the_same_trajectories(
    tmp_path: Path, battles: int, max_turns: int
) -> None:
    generated = tmp_path / "generated.jsonl"
    results = _generate(generated, battles, max_turns)
    logs = tmp_path / "logs" / "2026-12" / FORMAT / "2026-12-06"
    logs.mkdir(parents=True)
    for result in results:
        path = logs / f"{FORMAT}-{result.spec.index}.log.json"
        path.write_text(json.dumps(server_log(result)))
    imported = tmp_path / "imported.jsonl.gz"
    summary = import_battles([tmp_path / "logs"], imported, num_workers=1)
    assert (summary.read, summary.imported, summary.refused) == (battles, battles, 0)
    assert_same_trajectories(generated, imported)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[BattleResult]]:
    folder = tmp_path_factory.mktemp("played")
    results = _generate(folder / "generated.jsonl", 6)
    return folder / "generated.jsonl", results


def test_replay_files_and_jsonl_of_replays_import_with_their_rating(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    generated, results = played
    (tmp_path / "one.json").write_text(json.dumps(replay_json(results[0])))
    with gzip.open(tmp_path / "more.jsonl.gz", "wt") as file:
        for result in results[1:]:
            file.write(json.dumps(replay_json(result)) + "\n")
    out = tmp_path / "out.jsonl"
    summary = import_battles(
        [tmp_path / "one.json", tmp_path / "more.jsonl.gz"], out, min_rating=1502, num_workers=1
    )
    assert summary.imported == 4  # ratings 1500 and 1501 below --min-rating
    assert summary.refused_by_reason() == {importer.LOW_RATING: 2}
    records = list(read_trajectories(out))
    assert {r.provenance.rating for r in records if r.provenance} == {1502, 1503, 1504, 1505}
    expected = _by_battle(generated, FORMAT)
    for record in records:
        want = expected[(record.replay_id.rsplit("-", 1)[-1], record.player)]
        assert [s.action_type * 10 + s.action_target for s in record.steps] == [
            s.action_type * 10 + s.action_target for s in want.steps
        ]


def test_sides_keeps_the_winner_or_one_player(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    _, results = played
    logs = _write_logs(tmp_path / "logs", results)
    winner = import_battles([logs], tmp_path / "w.jsonl", sides="winner", num_workers=1)
    assert all(r.total_reward > 0 for r in read_trajectories(winner.path))
    p2 = import_battles([logs], tmp_path / "p2.jsonl", sides="p2", num_workers=1)
    assert {r.player for r in read_trajectories(p2.path)} == {"p2"}


def test_every_bad_battle_is_refused_with_its_reason_and_the_rest_imported(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    _, results = played
    good = [server_log(r) for r in results]
    files = {f"{i}.log.json": json.dumps(log) for i, log in enumerate(good[:3])}
    files["truncated.log.json"] = json.dumps(good[3])[:500]
    seeded = dict(good[4], roomid="battle-other-4")
    seeded["inputLog"] = [
        line.replace('"seed":[', '"seed":[1,') if line.startswith(">player p1") else line
        for line in good[4]["inputLog"]
    ]
    seeded["inputLog"][1] = seeded["inputLog"][1].replace('"seed":[', '"seed":[7,', 1)
    files["seed.log.json"] = json.dumps(seeded)
    files["repeat.log.json"] = json.dumps(dict(good[0], roomid="battle-copy"))
    files["nolog.json"] = json.dumps(dict(replay_json(results[5]), inputlog=None))
    ou = replay_json(results[5])
    files["gen9ou.json"] = json.dumps(dict(ou, inputlog=ou["inputlog"].replace(FORMAT, "gen9ou")))
    for name, text in files.items():
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_text(text)
    sources = [tmp_path / "in", tmp_path / "in" / "nolog.json", tmp_path / "in" / "gen9ou.json"]
    summary = import_battles(sources, tmp_path / "out.jsonl", num_workers=1)
    assert summary.imported == 3, [r.detail for r in summary.refusals]
    assert summary.refused_by_reason() == {
        importer.CORRUPT: 1,
        importer.DIVERGED: 1,
        importer.REPEATED: 1,
        importer.NO_INPUT_LOG: 1,
        importer.NO_GENERATED_TEAMS: 1,
    }
    details = {refusal.reason: refusal.detail for refusal in summary.refusals}
    # File names that could be usernames are shown hashed: `#HASH.log.json`.
    assert ".log.json: unexpected end of data" in details[importer.CORRUPT]
    assert "truncated" not in details[importer.CORRUPT]
    assert ".log.json: other-4: line " in details[importer.DIVERGED]
    assert "POKE_TUNE_SHOWDOWN_DIR" in details[importer.DIVERGED]
    assert "the same battle as" in details[importer.REPEATED]
    assert "'inputlog'" in details[importer.NO_INPUT_LOG]


def test_nothing_imported_is_an_error_and_writes_no_file(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    (tmp_path / "broken.log.json").write_text("{not json")
    with pytest.raises(NothingImportedError, match="no battle imported from 1 read"):
        import_battles([tmp_path / "broken.log.json"], tmp_path / "out.jsonl", num_workers=1)
    assert not list(tmp_path.glob("*out.jsonl*"))


def test_names_and_chat_never_reach_the_dataset(
    tmp_path: Path, played: tuple[Path, list[BattleResult]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, results = played
    monkeypatch.setenv(importer.NAME_KEY_ENV, KEY.decode())
    log = server_log(results[0], names=("Alice Quux", "Bob Zyzzy"))
    log["inputLog"].insert(5, ">chat Alice Quux|my secret plan")
    log["log"].insert(5, "|c|☆Alice Quux|my secret plan")
    (tmp_path / "a.log.json").write_text(json.dumps(log))
    out = tmp_path / "out.jsonl"
    summary = import_battles([tmp_path / "a.log.json"], out, num_workers=1)
    assert summary.imported == 1
    text = out.read_text().lower()
    for secret in ("alice", "quux", "bob", "zyzzy", "secret plan"):
        assert secret not in text
    records = list(read_trajectories(out))
    alice = importer.name_hash("Alice Quux", KEY)
    assert {r.player: r.provenance.player for r in records if r.provenance}["p1"] == alice
    assert importer.name_hash("alicequux", KEY) == alice  # one user id, one hash


def test_an_import_and_a_generated_file_combine_into_one_dataset(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    generated, results = played
    logs = _write_logs(tmp_path / "logs", results)
    imported = import_battles([logs], tmp_path / "imported.jsonl", num_workers=1).path
    # The same battles twice (an import of generated battles) go in once...
    twice = combine_datasets([generated, imported], tmp_path / "twice.json")
    assert (twice.trajectories, twice.repeats_dropped) == (2 * len(results), 2 * len(results))
    # ...other battles combine, the header listing both parts.
    other = tmp_path / "other.jsonl"
    generate_dataset(other, policies=["random"], battles=2, seed=99, num_workers=1)
    both = combine_datasets([imported, other], tmp_path / "both.json")
    assert [part["generator"].keys() for part in both.header.generator["parts"]] == [
        {"import"},
        {"policies", "battles", "seed", "max_turns", "hp_shaping"},
    ]
    dataset = load_dataset(tmp_path / "both.json", cache_root=tmp_path / "cache")
    assert dataset.num_trajectories == 2 * len(results) + 4


def test_parts_of_other_formats_do_not_combine(
    tmp_path: Path, played: tuple[Path, list[BattleResult]]
) -> None:
    generated, _ = played
    gen8 = tmp_path / "gen8.jsonl"
    generate_dataset(gen8, policies=["random"], battles=1, battle_format="gen8randombattle")
    with pytest.raises(DatasetError, match=r"header\.(observation_size|battle_format)"):
        combine_datasets([generated, gen8], tmp_path / "mixed.json")
