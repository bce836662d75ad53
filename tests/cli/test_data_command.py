"""`poke-tune data generate` with learned behaviour policies (in process, a few battles)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.data.jsonl import read_header, read_trajectories
from tests.synthetic import write_synthetic


def test_generate_with_a_checkpoint_and_its_softmax(
    learned_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = shutil.copy(learned_checkpoint, tmp_path / "behaviour.pt")
    out = tmp_path / "data.jsonl"
    policies = f"{checkpoint}:softmax=0.5,max-damage"
    args = ["data", "generate", str(out), "--battles", "2", "--workers", "1", "--policies"]
    result = CliRunner().invoke(app, [*args, policies])
    assert result.exit_code == 0, result.stderr
    generator = read_header(out).generator
    assert generator["policies"] == [f"{tmp_path / 'behaviour.pt'}:softmax=0.5", "max-damage"]
    assert set(generator["policy_files"]) == {generator["policies"][0]}


def test_generate_into_a_manifest_of_shards(tmp_path: Path) -> None:
    # OUT.json: the battles go straight into the cache's shard store; info reads it.
    out = tmp_path / "data.json"
    args = ["data", "generate", str(out), "--battles", "3", "--workers", "1", "--seed", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "3 battles" in result.stdout
    shards = json.loads(out.read_text())["shards"]
    assert len(shards) == 1 and Path(shards[0]["folder"]).parent.name == "shards"
    info = CliRunner().invoke(app, ["data", "info", str(out), "--json"])
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["battles"] == 3


def test_generate_with_a_bad_policy_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    for policies, text in [
        ("random,alphago", "unknown policy 'alphago'"),
        ("random:softmax=0.5", "softmax"),
        (f"{tmp_path / 'gone.pt'}", "gone.pt does not exist"),
    ]:
        result = CliRunner().invoke(app, ["data", "generate", str(out), "--policies", policies])
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("error: ") and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists()


def test_combine_info_and_export(tmp_path: Path) -> None:
    """Two files combine into a manifest (no shard copied), which `info` reads and
    `export` writes back out as one trajectory file; a bad name exits 2."""
    first = write_synthetic(tmp_path / "a.jsonl", 6, seed=1)
    second = write_synthetic(tmp_path / "b.jsonl.gz", 4, seed=2)
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "combine", str(first), str(second), "-o", str(tmp_path / "ab.json")]
    )
    assert result.exit_code == 0, result.stderr
    assert "10 trajectories from 2 parts (0 repeats excluded)" in result.stdout
    result = runner.invoke(app, ["data", "info", str(tmp_path / "ab.json"), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["trajectories"], info["shards"]) == (10, 2)
    result = runner.invoke(
        app, ["data", "export", str(tmp_path / "ab.json"), str(tmp_path / "ab.jsonl")]
    )
    assert result.exit_code == 0, result.stderr
    assert len(list(read_trajectories(tmp_path / "ab.jsonl"))) == 10
    result = runner.invoke(app, ["data", "combine", str(first), "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "name it *.json" in result.stderr
    assert "Traceback" not in result.stderr
