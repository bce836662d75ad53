"""`poke-tune data import` in process: the summary on stdout, refusals counted, exit 2 with
one `error:` line when nothing could be imported."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from poke_tune.cli.main import app
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
