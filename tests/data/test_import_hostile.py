"""`data import` against files strangers wrote, built from real server logs of generated
battles: each class of hostile input is refused with its counted reason, the good battles
beside it are imported, and nothing else on disk changes (issue #33)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poke_tune.data import importer, names, sources
from poke_tune.data.generate import generate_dataset
from poke_tune.data.importer import (
    ImportSummary,
    MixedFormatsError,
    NothingImportedError,
    OutputError,
    ReadLimits,
    import_battles,
)
from poke_tune.data.jsonl import read_trajectories
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.battles import SimulatorPool
from tests.data.test_importer import _generate, replay_json, server_log

KEY = "k" * 40
Files = dict[str, "bytes | str | Callable[[Path], None]"]


@pytest.fixture(autouse=True)
def _name_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.NAME_KEY_ENV, KEY)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> list[BattleResult]:
    return _generate(tmp_path_factory.mktemp("played") / "generated.jsonl", 5)


@pytest.fixture(scope="module")
def cut_off(tmp_path_factory: pytest.TempPathFactory) -> list[BattleResult]:
    """Battles ended by the turn limit (`>forcetie`): no winner."""
    return _generate(tmp_path_factory.mktemp("cut") / "generated.jsonl", 2, max_turns=3)


@pytest.fixture(scope="module")
def gen8(tmp_path_factory: pytest.TempPathFactory) -> BattleResult:
    results: list[BattleResult] = []
    generate_dataset(
        tmp_path_factory.mktemp("gen8") / "gen8.jsonl",
        policies=["random"],
        battles=1,
        battle_format="gen8randombattle",
        num_workers=1,
        on_result=results.append,
        keep_logs=True,
    )
    return results[0]


def good_logs(played: list[BattleResult]) -> list[dict[str, Any]]:
    return [server_log(result) for result in played[:3]]


def snapshot(root: Path) -> dict[str, tuple[int, str | None]]:
    """Every path under `root` with its mode and content hash (link target for a link);
    special files are not opened."""
    state: dict[str, tuple[int, str | None]] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            content = None
            if stat.S_ISLNK(mode):
                content = os.readlink(path)
            elif stat.S_ISREG(mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path.relative_to(root))] = (mode, content)
    return state


def write_files(folder: Path, files: Files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def run_import(
    tmp_path: Path,
    pool: SimulatorPool,
    good: list[dict[str, Any]],
    hostile: Files,
    extra: Files | None = None,
    **options: Any,
) -> ImportSummary:
    """Import a folder of the good logs and the hostile files (plus `extra` files named as
    sources of their own); asserts the only change on disk is the new OUT."""
    folder = tmp_path / "in"
    write_files(folder, {f"{i}.log.json": json.dumps(log) for i, log in enumerate(good, 10)})
    write_files(folder, hostile)
    write_files(tmp_path / "extra", extra or {})
    out = tmp_path / "out.jsonl"
    before = snapshot(tmp_path)
    summary = import_battles(
        [folder, *(tmp_path / "extra" / name for name in extra or {})],
        out,
        pool=pool,
        **options,
    )
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "out.jsonl"} == before
    assert "out.jsonl" in after
    return summary


def assert_nothing_written(tmp_path: Path, action: Callable[[], object]) -> BaseException:
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as raised:
        action()
    assert snapshot(tmp_path) == before
    return raised.value


def _with(base: dict[str, Any], **fields: Any) -> str:
    return json.dumps({**base, **fields})


def _input_line(log: dict[str, Any], index: int, line: str) -> str:
    input_log = list(log["inputLog"])
    input_log[index] = line
    return json.dumps({**log, "inputLog": input_log})


# -- 1. nothing in one battle stops the rest -----------------------------------------------


def test_wrong_types_nesting_numbers_and_text_are_refused_alone(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    good = good_logs(played)
    log = server_log(played[3])
    player = next(i for i, line in enumerate(log["inputLog"]) if line.startswith(">player p1"))
    text = json.dumps(log)
    hostile: Files = {
        "a-object-inputlog.log.json": _with(log, inputLog={"x": 1}),
        "b-start-list.log.json": _input_line(log, 0, ">start [1, 2]"),
        "c-player-string.log.json": _input_line(log, player, '>player p1 "Alice"'),
        "d-player-name-number.log.json": _input_line(log, player, '>player p1 {"name": 7}'),
        "e-log-numbers.log.json": _with(log, log=[1, 2, 3]),
        "f-roomid-object.log.json": _with(log, roomid={"a": 1}),
        "g-rating-huge.log.json": _with(log, p1rating=1e308),
        "h-rating-string.log.json": _with(log, p1rating="1500"),
        "i-not-an-object.log.json": "[1, 2, 3]",
        "j-neither.log.json": '{"hello": "world"}',
        "k-inner-surrogate.log.json": _input_line(log, player, '>player p1 {"name": "\\ud800"}'),
        # corrupt JSON: nesting past any recursion limit, a number past a double, a lone
        # surrogate, bytes that are not UTF-8, a truncation
        "l-deep.log.json": text.replace('"log": [', '"log": ' + "[" * 100_000, 1),
        "m-huge-number.log.json": text.replace('"p1rating": null', '"p1rating": 1' + "0" * 400),
        "n-surrogate.log.json": text.replace('"roomid": "', '"roomid": "\\udc00', 1),
        "o-latin1.log.json": b"\xff\xfe" + text.encode(),
        "p-truncated.log.json": text[: len(text) // 2],
    }
    replay = replay_json(played[4])
    extra: Files = {
        "inputlog-list.json": json.dumps({**replay, "inputlog": ["x"]}),
        "log-object.json": json.dumps({**replay, "log": {"a": 1}}),
    }
    summary = run_import(tmp_path, pool, good, hostile, extra)
    assert summary.imported == 3, [r.detail for r in summary.refusals]
    assert summary.refused_by_reason() == {importer.MALFORMED: 13, importer.CORRUPT: 5}
    details = " ".join(r.detail for r in summary.refusals)
    for field in ("'inputLog'", "'log'", "'roomid'", "'p1rating'", "'inputlog'", ">player"):
        assert field in details
    assert "Alice" not in details


# -- 2. the format is the verified battles' ------------------------------------------------


def test_a_file_claiming_another_format_cannot_refuse_the_good_ones(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    fake = {
        "inputLog": [
            '>start {"formatid":"gen8randombattle"}',
            '>player p1 {"name":"a"}',
            '>player p2 {"name":"b"}',
        ],
        "log": [],
    }
    hostile: Files = {
        "0.log.json": json.dumps(fake),  # sorts first
        "00.log.json": json.dumps({**fake, "inputLog": [*fake["inputLog"], ">p1 move 1"]}),
        "000.log.json": json.dumps(
            {
                **fake,
                "inputLog": [fake["inputLog"][0].replace("gen8", "gen5"), *fake["inputLog"][1:]],
            }
        ),
    }
    summary = run_import(tmp_path, pool, good_logs(played), hostile)
    assert (summary.imported, summary.battle_format) == (3, "gen9randombattle")
    assert summary.refused == 3
    assert set(summary.refused_by_reason()) <= {importer.DIVERGED, importer.NOT_REPLAYABLE}


def test_several_verified_formats_ask_for_format_and_others_are_counted_apart(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult], gen8: BattleResult
) -> None:
    folder = tmp_path / "in"
    write_files(
        folder, {f"{i}.log.json": json.dumps(log) for i, log in enumerate(good_logs(played))}
    )
    write_files(folder, {"gen8.log.json": json.dumps(server_log(gen8))})
    out = tmp_path / "out.jsonl"
    error = assert_nothing_written(tmp_path, lambda: import_battles([folder], out, pool=pool))
    assert isinstance(error, MixedFormatsError)
    assert "gen8randombattle (1 battles)" in str(error) and "--format" in str(error)
    summary = import_battles([folder], out, pool=pool, battle_format="gen9randombattle")
    assert summary.imported == 3
    assert summary.refused_by_reason() == {importer.OTHER_FORMAT: 1}
    gen8_only = import_battles(
        [folder], tmp_path / "gen8.jsonl", pool=pool, battle_format="gen8randombattle"
    )
    assert (gen8_only.imported, gen8_only.refused_by_reason()) == (1, {importer.OTHER_FORMAT: 3})


def test_an_unknown_random_format_is_refused_as_unknown(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    log = server_log(played[3])
    start = log["inputLog"][0].replace("gen9randombattle", "gen9randombattlezz")
    summary = run_import(
        tmp_path, pool, good_logs(played), {"z.log.json": _input_line(log, 0, start)}
    )
    assert summary.imported == 3
    assert summary.refused_by_reason() == {importer.UNKNOWN_FORMAT: 1}


# -- 3. sources are never written ----------------------------------------------------------


def test_out_that_is_or_lies_in_a_source_and_an_existing_out_are_refused_unread(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    folder = tmp_path / "in"
    write_files(folder, {"0.log.json": json.dumps(server_log(played[0]))})
    source = folder / "0.log.json"
    (tmp_path / "link.jsonl").symlink_to(source)
    (tmp_path / "taken.jsonl").write_text("someone's file")
    for sources_, out in (
        ([source], source),
        ([source, source], source),
        ([folder], folder / "out.jsonl"),
        ([folder], folder / "deeper" / "out.jsonl"),
        ([source], tmp_path / "link.jsonl"),
        ([folder], tmp_path / "taken.jsonl"),
    ):
        error = assert_nothing_written(
            tmp_path, lambda s=sources_, o=out: import_battles(s, o, pool=pool)
        )
        assert isinstance(error, OutputError), error
    summary = import_battles([folder], tmp_path / "taken.jsonl", pool=pool, overwrite=True)
    assert summary.imported == 1 and (tmp_path / "taken.jsonl").read_text() != "someone's file"


def test_a_run_importing_nothing_writes_nothing(tmp_path: Path, pool: SimulatorPool) -> None:
    write_files(tmp_path / "in", {"a.log.json": "{", "b.log.json": "[]", "c.log.json": ""})
    error = assert_nothing_written(
        tmp_path, lambda: import_battles([tmp_path / "in"], tmp_path / "o.jsonl", pool=pool)
    )
    assert isinstance(error, NothingImportedError)
    assert error.summary.refused == 3


# -- 4. what was played, by side -----------------------------------------------------------


def _respaced(log: dict[str, Any], names_: tuple[str, str] | None = None) -> dict[str, Any]:
    """The same battle with its `>start`/`>player` JSON re-spaced (and players renamed)."""
    lines = []
    for line in log["inputLog"]:
        command, _, rest = line.partition(" ")
        if command == ">start":
            line = f">start {json.dumps(json.loads(rest), indent=1)}".replace("\n", " ")
        elif command == ">player":
            side, _, options = rest.partition(" ")
            parsed = json.loads(options)
            if names_ is not None:
                parsed["name"] = names_[0 if side == "p1" else 1]
            line = f">player {side}   {json.dumps(parsed, separators=(' , ', ' : '))}"
        elif command in (">p1", ">p2"):
            line = f"{command}  {'  '.join(rest.split())}"
        lines.append(line)
    return {**log, "inputLog": lines}


def test_a_battle_respaced_or_renamed_is_one_battle(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    good = good_logs(played)
    hostile: Files = {}
    for copy in range(3):
        hostile[f"respaced-{copy}.log.json"] = json.dumps(
            dict(_respaced(good[copy]), roomid=f"battle-gen9randombattle-{90 + copy}")
        )
        hostile[f"renamed-{copy}.log.json"] = json.dumps(
            _respaced(server_log(played[copy], names=("X Y", "Z W")), names_=("X Y", "Z W"))
        )
    summary = run_import(tmp_path, pool, good, hostile)
    assert summary.imported == 3, [r.detail for r in summary.refusals]
    assert summary.refused_by_reason() == {importer.REPEATED: 6}
    assert len(list(read_trajectories(tmp_path / "out.jsonl"))) == 6


def test_players_of_one_name_keep_their_own_rewards(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    same = [server_log(result, names=("Twin", "Twin")) for result in played]
    summary = run_import(tmp_path, pool, same, {})
    assert summary.imported == len(played)
    rewards = {
        (r.provenance.battle_id if r.provenance else "", r.player): r.total_reward
        for r in read_trajectories(tmp_path / "out.jsonl")
    }
    for result in played:
        battle_id = f"gen9randombattle-{result.spec.index}"
        for side in ("p1", "p2"):
            won = 1.0 if result.winner == side else -1.0 if result.winner else 0.0
            assert rewards[(battle_id, side)] == won, (battle_id, side, result.winner)


def test_sides_winner_refuses_a_battle_without_winner(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult], cut_off: list[BattleResult]
) -> None:
    hostile = {f"cut-{r.spec.index}.log.json": json.dumps(server_log(r)) for r in cut_off}
    summary = run_import(tmp_path, pool, good_logs(played), hostile, sides="winner")
    assert summary.imported == 3
    assert summary.refused_by_reason() == {importer.NO_WINNER: 2}
    (tmp_path / "out.jsonl").unlink()
    error = assert_nothing_written(
        tmp_path,
        lambda: import_battles(
            [tmp_path / "in" / name for name in hostile],
            tmp_path / "o.jsonl",
            pool=pool,
            sides="winner",
        ),
    )
    assert isinstance(error, NothingImportedError)


# -- 5. bounded reading, files that are not files ------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(path))


def _link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _loop(path: Path) -> None:
    path.symlink_to(path.with_name("loop-b.log.json"))
    path.with_name("loop-b.log.json").symlink_to(path)


def test_only_regular_files_are_read(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    real = tmp_path / "real.log.json"
    real.write_text(json.dumps(server_log(played[3])))
    hostile: Files = {
        "fifo.log.json": _fifo,
        "socket.log.json": _socket,
        "zero.log.json": _link_to("/dev/zero"),
        "null.log.json": _link_to("/dev/null"),
        "folder.log.json": lambda path: path.mkdir(),
        "loop-a.log.json": _loop,
        "dangling.log.json": _link_to("/nonexistent/x.log.json"),
        "to-real.log.json": _link_to(str(real)),  # a symlink to a regular file is read
    }
    extra: Files = {"fifo.jsonl": _fifo}
    summary = run_import(tmp_path, pool, good_logs(played), hostile, extra)
    assert summary.imported == 4, [r.detail for r in summary.refusals]
    assert summary.refused_by_reason() == {importer.NOT_REGULAR: 5, importer.UNREADABLE: 3}
    # A sweep's cache key reads the same files the same way: no hang on the pipe or device.
    assert len(sources.sources_digest([tmp_path / "in", tmp_path / "extra"])) == 32


def test_size_limits_refuse_what_is_too_large(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    good = good_logs(played)
    size = max(len(json.dumps(log)) for log in good)
    line = json.dumps(server_log(played[3]))
    limits = ReadLimits(
        max_file_bytes=size * 20, max_battle_bytes=size + 10, max_decompressed_bytes=size * 8
    )
    bomb = gzip.compress(b"\0" * (size * 50))
    hostile: Files = {
        "big.log.json": " " * (size + 20) + "{}",
        "huge-file.log.json": " " * (size * 21),
    }
    extra: Files = {
        "long-line.jsonl": "x" * (size * 3) + "\n" + line + "\n",  # the line after is read
        "bomb.jsonl.gz": bomb,
        "lines-bomb.jsonl.gz": gzip.compress((line + "\n").encode() * 12),
    }
    summary = run_import(tmp_path, pool, good, hostile, extra, limits=limits)
    # The long line is refused, the line after it read; the line bomb stops at the limit
    # (its first lines, one battle, are read: one imported, the copies repeated).
    assert summary.imported == 4, [r.detail for r in summary.refusals]
    counts = summary.refused_by_reason()
    assert counts.pop(importer.TOO_LARGE) == 5
    assert set(counts) == {importer.REPEATED}


# -- 6. names stay hashed ------------------------------------------------------------------


def test_the_name_key_is_made_whole_private_and_a_short_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(names.NAME_KEY_ENV)
    monkeypatch.setenv("POKE_TUNE_CACHE", str(tmp_path / "cache"))
    key = names.name_key()
    path = tmp_path / "cache" / names.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    assert names.name_key() == key and list(path.parent.iterdir()) == [path]
    for short in ("", "\n", "abc"):
        path.write_text(short)
        with pytest.raises(names.NameKeyError, match="delete the file"):
            names.name_key()
        assert path.read_text() == short  # refused, never replaced
    monkeypatch.setenv(names.NAME_KEY_ENV, "short")
    with pytest.raises(names.NameKeyError, match=names.NAME_KEY_ENV):
        names.name_key()


def test_no_clear_name_in_dataset_header_provenance_or_messages(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    secret = ("Alice Quux", "Bob Zyzzy")
    logs = [server_log(result, names=secret) for result in played[:3]]
    diverged = dict(logs[2], log=[line for line in logs[2]["log"] if not line.startswith("|win|")])
    diverged["log"].append("|win|Carol Xyzzy")
    hostile: Files = {
        "alicequux/bob-zyzzy-vs-alice.log.json": json.dumps(logs[0]),
        "alicequux/broken-alice.log.json": "{",
        "zz-carol.log.json": json.dumps(dict(diverged, roomid="battle-gen9randombattle-77")),
    }
    summary = run_import(tmp_path, pool, logs[1:2], hostile)
    assert summary.imported == 2
    assert summary.refused_by_reason() == {importer.CORRUPT: 1, importer.DIVERGED: 1}
    shown = " ".join(r.detail + r.source for r in summary.refusals).lower()
    stored = (tmp_path / "out.jsonl").read_text().lower()
    for word in ("alice", "quux", "bob", "zyzzy", "carol", "xyzzy", "broken"):
        assert word not in shown and word not in stored, word
    assert "|win|" in shown  # the line is named by its kind


# -- 7. honest reasons ---------------------------------------------------------------------


def test_illegal_choices_cannot_be_re_simulated_and_unreadable_is_not_corrupt(
    tmp_path: Path,
    pool: SimulatorPool,
    played: list[BattleResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile: Files = {}
    illegal_choices = ("move 9", "switch 7", "switch 0", "switch \u00b2", "move")
    for number, illegal in enumerate(illegal_choices):
        log = server_log(played[3 + number % 2])
        choice = next(i for i, line in enumerate(log["inputLog"]) if line.startswith(">p1 move"))
        hostile[f"illegal-{number}.log.json"] = _input_line(log, choice, f">p1 {illegal}")
    hostile["locked.log.json"] = json.dumps(server_log(played[3]))
    hostile["locked-folder/x.log.json"] = json.dumps(server_log(played[4]))
    real_open, real_scandir = os.open, os.scandir

    def locked_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("locked.log.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def locked_scandir(path: Any = ".") -> Any:
        if str(path).endswith("locked-folder"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "open", locked_open)
    monkeypatch.setattr(os, "scandir", locked_scandir)
    summary = run_import(tmp_path, pool, good_logs(played), hostile)
    assert summary.imported == 3
    assert summary.refused_by_reason() == {importer.NOT_REPLAYABLE: 5, importer.UNREADABLE: 2}
    illegal = sorted(r.detail for r in summary.refusals if r.reason == importer.NOT_REPLAYABLE)
    for choice in illegal_choices:  # each named in its reason
        assert any(f"'{choice}'" in detail for detail in illegal), (choice, illegal)


def test_an_interrupted_import_leaves_nothing_behind(
    tmp_path: Path, pool: SimulatorPool, played: list[BattleResult]
) -> None:
    folder = tmp_path / "in"
    write_files(
        folder, {f"{i}.log.json": json.dumps(log) for i, log in enumerate(good_logs(played))}
    )
    before = snapshot(tmp_path)

    def interrupt(result: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_battles([folder], tmp_path / "out.jsonl", pool=pool, on_result=interrupt)
    assert snapshot(tmp_path) == before
    summary = import_battles([folder], tmp_path / "out.jsonl", pool=pool)  # the pool still works
    assert summary.imported == 3


def test_a_flood_of_bad_lines_is_counted_whole_and_kept_in_part(
    tmp_path: Path, pool: SimulatorPool
) -> None:
    flood = tmp_path / "in" / "flood.jsonl.gz"
    flood.parent.mkdir()
    flood.write_bytes(gzip.compress(b"{not json}\n" * (importer.KEPT_REFUSALS + 500)))
    error = assert_nothing_written(
        tmp_path, lambda: import_battles([flood], tmp_path / "o.jsonl", pool=pool)
    )
    assert isinstance(error, NothingImportedError)
    assert error.summary.refused_by_reason() == {importer.CORRUPT: importer.KEPT_REFUSALS + 500}
    assert len(error.summary.refusals) == importer.KEPT_REFUSALS
