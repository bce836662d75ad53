"""The `poke-tune` console script end to end, on small budgets, with the real simulator
(slow: every command a fresh process and real battles; `test_refusals.py` and
`test_train_command.py` are the fast in-process lane)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))


def run(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POKE_TUNE, *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_eval_reports_a_win_rate_with_an_interval() -> None:
    result = run("eval", "max-damage", "--opponent", "random", "--battles", "40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["battles"] == 40
    assert report["wins"] + report["losses"] + report["ties"] == 40
    assert report["ci_low"] <= report["win_rate"] <= report["ci_high"]
    assert report["win_rate"] > 0.6
    assert report["invalid_choices"] == 0


def test_unknown_policy_is_a_clear_error() -> None:
    result = run("eval", "alphago", "--battles", "2")
    assert result.returncode == 2
    assert "unknown policy 'alphago'" in result.stderr


def test_generate_then_info(tmp_path: Path) -> None:
    out = tmp_path / "tiny.jsonl.gz"
    generated = run("data", "generate", str(out), "--battles", "6", "--seed", "3")
    assert generated.returncode == 0, generated.stderr
    assert "6 battles, 12 trajectories" in generated.stdout
    info = run("data", "info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    stats = json.loads(info.stdout)
    assert stats["battles"] == 6 and stats["trajectories"] == 12
    assert stats["transitions"] > 6 * 2


def test_info_on_a_malformed_file_names_the_line(tmp_path: Path) -> None:
    out = tmp_path / "ok.jsonl"
    assert run("data", "generate", str(out), "--battles", "2").returncode == 0
    lines = out.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:2], lines[2][: len(lines[2]) // 2]]) + "\n")
    result = run("data", "info", str(broken))
    assert result.returncode == 2
    assert "broken.jsonl:3" in result.stderr


def test_train_then_eval_the_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl.gz"
    assert run("data", "generate", str(data), "--battles", "8").returncode == 0
    out = tmp_path / "run"
    trained = run(
        "train",
        "--algo",
        "iql",
        "--data",
        str(data),
        "--steps",
        "60",
        "--out",
        str(out),
        "--set",
        "eval_interval=30",
        "--set",
        "expectile=0.8",
        "--set",
        "network.hidden_sizes=[32]",
    )
    assert trained.returncode == 0, trained.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [30, 60]
    assert json.loads((out / "config.json").read_text())["algo"]["expectile"] == 0.8
    evaluated = run(
        "eval", str(out / "checkpoint_last.pt"), "--opponent", "random", "--battles", "4", "--json"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["battles"] == 4


def test_train_rejects_an_out_of_range_hyperparameter(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    assert run("data", "generate", str(data), "--battles", "2").returncode == 0
    result = run("train", "--algo", "iql", "--data", str(data), "--set", "expectile=0.4")
    assert result.returncode == 2
    assert "expectile" in result.stderr and "greater than 0.5" in result.stderr
