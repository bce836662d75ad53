"""`poke-tune data import` in process: the summary on stdout, refusals counted, exit 2 with
one `error:` line when nothing could be imported."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from poke_tune.cli.main import app
from poke_tune.data.generate import generate_dataset
from poke_tune.sim.battle_records import BattleResult
from tests.data.test_importer import _generate, server_log


def _row(table: str, key: str) -> str:
    """The value column of the summary table's row `key`."""
    match = re.search(rf"│\s*{re.escape(key)}\s*│ (.*?)\s*│", table)
    assert match is not None, table
    return match.group(1)


def test_import_prints_counts_per_reason(tmp_path: Path) -> None:
    results = _generate(tmp_path / "generated.jsonl", 3)
    logs = tmp_path / "logs"
    logs.mkdir()
    for result in results:
        (logs / f"{result.spec.index}.log.json").write_text(json.dumps(server_log(result)))
    (logs / "bad.log.json").write_text('{"inputLog": [')
    out = tmp_path / "out.jsonl.gz"
    result = CliRunner().invoke(app, ["data", "import", str(logs), str(out), "--workers", "1"])
    assert result.exit_code == 0, result.stderr
    assert (_row(result.stdout, "battles read"), _row(result.stdout, "imported")) == ("4", "3")
    assert _row(result.stdout, "refused: truncated or corrupt JSON") == "1"
    assert f"wrote {out}: 3 battles, 6 trajectories" in result.stdout
    # The file's name could be a username: shown hashed, `#HASH.log.json`.
    assert ".log.json: unexpected end of data" in result.stderr and out.is_file()
    assert "bad.log" not in result.stderr


def test_nothing_imported_exits_2_with_an_error_line(tmp_path: Path) -> None:
    (tmp_path / "bad.log.json").write_text("{")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "bad.log.json"), str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no battle imported")
    assert "Traceback" not in result.stderr and not out.exists()


def test_bad_options_are_refused_before_any_work(tmp_path: Path) -> None:
    for args in (["--sides", "loser"], ["--format", "gen9ou"]):
        result = CliRunner().invoke(app, ["data", "import", str(tmp_path), "o.jsonl", *args])
        assert result.exit_code == 2 and result.stderr.startswith("error: "), result.stderr


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["data", "import", *args])


def _assert_user_error(result: Result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for text in expected:
        assert text in result.stderr, result.stderr


def test_bad_input_exits_2_with_the_flag_and_what_was_expected(tmp_path: Path) -> None:
    source = tmp_path / "a.log.json"
    source.write_text("{}")
    out = str(tmp_path / "o.jsonl")
    too_many = str((os.cpu_count() or 1) + 1)
    for args, expected in (
        (["--workers", too_many], ("--workers", "expected 1 to")),
        (["--workers", "0"], ("--workers 0",)),
        (["--max-battle-mb", "0"], ("--max-battle-mb 0", "expected 1 to")),
        (["--max-file-mb", "-3"], ("--max-file-mb -3",)),
        (["--max-decompressed-mb", "99999999"], ("--max-decompressed-mb",)),
    ):
        _assert_user_error(_invoke(str(source), out, *args), *expected)
    _assert_user_error(_invoke(str(tmp_path / "missing"), out), "missing", "SOURCE")
    assert not Path(out).exists()


def test_out_over_a_source_or_an_existing_file_needs_force(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    source = logs / "a.log.json"
    source.write_text('{"some": "stranger\'s file"}')
    before = source.read_bytes()
    _assert_user_error(_invoke(str(source), str(source)), "sources are never written")
    _assert_user_error(_invoke(str(logs), str(logs / "o.jsonl")), "inside the source")
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine")
    _assert_user_error(_invoke(str(logs), str(taken)), "--force")
    assert source.read_bytes() == before and taken.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.log.json", "logs", "taken.jsonl"]


def test_a_short_name_key_is_an_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POKE_TUNE_NAME_KEY", "abc")
    (tmp_path / "a.log.json").write_text("{}")
    result = _invoke(str(tmp_path / "a.log.json"), str(tmp_path / "o.jsonl"))
    _assert_user_error(result, "POKE_TUNE_NAME_KEY", "at least 32")


def test_several_formats_exit_2_naming_them(tmp_path: Path) -> None:
    results = _generate(tmp_path / "generated.jsonl", 1)
    gen8: list[BattleResult] = []
    generate_dataset(
        tmp_path / "gen8.jsonl",
        policies=["random"],
        battles=1,
        battle_format="gen8randombattle",
        num_workers=1,
        on_result=gen8.append,
        keep_logs=True,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log.json").write_text(json.dumps(server_log(results[0])))
    (logs / "b.log.json").write_text(json.dumps(server_log(gen8[0])))
    result = _invoke(str(logs), str(tmp_path / "out.jsonl"), "--workers", "1")
    _assert_user_error(result, "gen8randombattle (1 battles)", "gen9randombattle (1 battles)")
    assert "--format" in result.stderr and not (tmp_path / "out.jsonl").exists()
    chosen = _invoke(
        str(logs), str(tmp_path / "out.jsonl"), "--workers", "1", "--format", "gen8randombattle"
    )
    assert chosen.exit_code == 0, chosen.stderr
    assert _row(chosen.stdout, "refused: another format than --format") == "1"
