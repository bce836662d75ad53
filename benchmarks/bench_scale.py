"""Datasets at scale: bytes, compile and training memory, and a round's data cost, by size.

For each size (battles of the quick start's recipe: random + max-damage:softmax=0.3, HP
shaping 1.0), in one run on this machine:
1. the trajectory file: generated once (battles/s) and kept in `--work`, or, for a size
   given as `N=FILE+FILE`, files generated beforehand (e.g. in the background, as 4,000
   battles of seed 0 and 36,000 of seed 1), compiled each and combined by a manifest;
2. import (battles/s): `--import-battles` of the generated battles written as server logs
   and imported back (re-simulated and verified);
3. compile, in a child process: transitions/s and peak RSS, bytes per transition of the
   trajectory file and of the compiled cache;
4. a training trial, in a child process: CQL (the quick start's action-centric network,
   batch 256, one torch thread), steps/s, peak RSS and the private (anonymous) memory at
   the end: the memory-mapped shards are shared page cache, not the trial's own;
5. before/after at `--compare` battles: the same compile and trial on the code of
   `--baseline` (a git worktree of that commit), whose cache is float32 and whose trials
   copy the whole dataset;
6. a flywheel's data cost per round: rounds of `--round-battles` each, combined the old way
   (every round rewritten into one file and compiled again) and the new way (the round's
   file compiled into its own shards, the manifests concatenated).

usage: python benchmarks/bench_scale.py [--sizes 400,4000,40000=A.jsonl.gz+B.jsonl.gz]
       [--work /tmp/bench-scale]
       [--steps 300] [--compare 4000] [--baseline d2b8267] [--round-battles 1000]
       python benchmarks/bench_scale.py --generation 400   # file + compile vs shards
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.data.test_importer writes battles as server logs
POLICIES = ["random", "max-damage:softmax=0.3"]

_COMPILE = """
import json, resource, sys, time
from pathlib import Path
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
cache, shard_rows = Path(sys.argv[1]), int(sys.argv[2])
sources = [Path(p) for p in sys.argv[3:]]
options = {"shard_rows": shard_rows} if shard_rows else {}  # the old code has no shards
started = time.perf_counter()
parts = [load_dataset(source, cache_root=cache, **options) for source in sources]
dataset = parts[0]
if len(sources) > 1:
    combine_datasets(sources, cache / "combined.json", cache_root=cache)
    dataset = load_dataset(cache / "combined.json", cache_root=cache)
seconds = time.perf_counter() - started
cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
print(json.dumps({"transitions": dataset.num_transitions, "seconds": seconds,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "cache_bytes": cache_bytes, "shards": len(getattr(dataset, "shards", [None])),
    "dataset": str(cache / "combined.json") if len(sources) > 1 else str(sources[0])}))
"""

_TRAIN = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from poke_tune.algos import CQLConfig, NetworkConfig, TrainConfig, Trainer
from poke_tune.data.compiled import load_dataset
def status():
    lines = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmHWM", "RssAnon", "RssFile")}
source, cache, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dataset = load_dataset(source, cache_root=cache)
config = TrainConfig(steps=steps + 20, batch_size=256, fqe_steps=0, device="cpu", seed=0)
trainer = Trainer(CQLConfig(network=NetworkConfig(kind="action")), config, dataset)
trainer.train(20)
started = time.perf_counter()
metrics = trainer.train(steps + 20)
seconds = time.perf_counter() - started
generator = torch.Generator().manual_seed(1)
started = time.perf_counter()
for _ in range(100):
    trainer.train_data.sample(256, generator)
batch_ms = (time.perf_counter() - started) * 10
after = status()
print(json.dumps({"steps_per_s": steps / seconds, "batch_ms": batch_ms,
    "peak_rss": after["VmHWM"], "anon": after["RssAnon"], "file": after["RssFile"],
    "q_loss": metrics.get("train/q_loss")}))
"""

_ROUNDS_OLD = """
import json, sys, time
from pathlib import Path
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
cache, out = Path(sys.argv[1]), Path(sys.argv[2])
rounds = [Path(p) for p in sys.argv[3:]]
times = []
for k in range(1, len(rounds) + 1):
    started = time.perf_counter()
    combined = out / f"combined-{k}.jsonl.gz"
    if k == 1:
        load_dataset(rounds[0], cache_root=cache)
    else:
        combine_datasets(rounds[:k], combined)
        load_dataset(combined, cache_root=cache)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""

_ROUNDS_NEW = """
import json, sys, time
from pathlib import Path
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
cache, out = Path(sys.argv[1]), Path(sys.argv[2])
rounds = [Path(p) for p in sys.argv[3:]]
times = []
for k in range(1, len(rounds) + 1):
    started = time.perf_counter()
    load_dataset(rounds[k - 1], cache_root=cache)  # the new round's own shards
    if k > 1:
        combine_datasets(rounds[:k], out / f"combined-{k}.json", cache_root=cache)
        load_dataset(out / f"combined-{k}.json", cache_root=cache)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


_GENERATE = """
import json, resource, sys, time
from pathlib import Path
from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import generate_dataset, generate_shards
way, work, battles = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
recipe = dict(policies=["random", "max-damage:softmax=0.3"], battles=battles, seed=0,
    hp_shaping=1.0, num_workers=2)
started = time.perf_counter()
if way == "file":  # the interchange file, then compiled into shards
    generate_dataset(work / "d.jsonl.gz", **recipe)
    played = time.perf_counter() - started
    dataset = load_dataset(work / "d.jsonl.gz", cache_root=work / "cache")
else:
    generate_shards(work / "d.json", store=work / "cache" / "shards", **recipe)
    played = None
    dataset = load_dataset(work / "d.json")
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "played": played, "keys": [s.key for s in dataset.shards],
    "transitions": dataset.num_transitions,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _generation_table(work: Path, battles: int, repeats: int) -> None:
    """Generating a dataset the old way (file, then compile) and straight into shards,
    interleaved; the same battles, so the same transitions."""
    print(f"\ngenerating {battles:,} battles into a compiled dataset (2 workers, interleaved)")
    print("| way | run | seconds | battles/s | of which compiling | peak RSS | transitions |")
    print("|---|---|---|---|---|---|---|")
    for run in range(1, repeats + 1):
        for way in ("file", "shards"):
            folder = work / f"generation-{way}-{run}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            out = _child(_GENERATE, [way, str(folder), str(battles)])
            compiling = (
                f"{out['seconds'] - out['played']:.1f} s" if out["played"] is not None else "-"
            )
            label = "file + compile" if way == "file" else "straight into shards"
            print(
                f"| {label} | {run} | {out['seconds']:.1f} | {battles / out['seconds']:.2f} | "
                f"{compiling} | {_gb(out['peak_rss'])} | {out['transitions']:,} |"
            )


def _child(code: str, args: list[str], *, code_root: Path = ROOT) -> Any:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=code_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _generated(work: Path, battles: int) -> tuple[Path, float | None]:
    """The recipe's file of `battles` battles, and battles/s if it was generated now."""
    from poke_tune.data.generate import generate_dataset

    path = work / f"battles-{battles}.jsonl.gz"
    if path.is_file():
        return path, None
    started = time.perf_counter()
    generate_dataset(
        path, policies=POLICIES, battles=battles, seed=0, hp_shaping=1.0, num_workers=2
    )
    return path, battles / (time.perf_counter() - started)


def _import_rate(work: Path, battles: int) -> float:
    """Battles/s of `data import` over server logs of `battles` freshly played battles."""
    from poke_tune.data.generate import generate_dataset
    from poke_tune.data.importer import import_battles
    from tests.data.test_importer import server_log

    logs = Path(tempfile.mkdtemp(dir=work, prefix="logs-"))
    results: list[Any] = []
    generate_dataset(
        logs / "played.jsonl",
        policies=POLICIES,
        battles=battles,
        seed=1,
        hp_shaping=1.0,
        keep_logs=True,
        on_result=results.append,
    )
    for result in results:
        (logs / f"{result.spec.index}.log.json").write_text(json.dumps(server_log(result)))
    (logs / "played.jsonl").unlink()
    out = work / f"imported-{battles}.jsonl.gz"
    started = time.perf_counter()
    summary = import_battles([logs], out, num_workers=2, overwrite=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(logs)
    assert summary.imported == battles, summary.refused_by_reason()
    return battles / seconds


def _round_files(source: Path, work: Path, rounds: int, battles: int) -> list[Path]:
    """`rounds` files of `battles` battles each, cut in order from `source`."""
    from poke_tune.data.jsonl import TrajectoryWriter, open_trajectories

    paths = [work / f"round-{k}-{battles}.jsonl.gz" for k in range(rounds)]
    if all(path.is_file() for path in paths):
        return paths
    with open_trajectories(source) as (header, records):
        for path in paths:
            with TrajectoryWriter(path, header) as writer:
                for _ in range(2 * battles):  # two trajectories a battle
                    writer.write(next(records)[1])
    return paths


def _baseline(commit: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"poke-tune-baseline-{commit}"
    if not folder.is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True
        )
    return folder


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def _sizes(text: str, work: Path) -> dict[int, tuple[list[Path], str]]:
    """Each size's trajectory files and its generate rate (generated now, if it was)."""
    files: dict[int, tuple[list[Path], str]] = {}
    for item in text.split(","):
        size, _, parts = item.partition("=")
        if parts:  # generated beforehand, in parts, combined as a flywheel's rounds are
            files[int(size)] = ([Path(part) for part in parts.split("+")], "see note")
        else:
            path, rate = _generated(work, int(size))
            files[int(size)] = ([path], f"{rate:.1f}" if rate else "cached")
    return files


def _scale_table(files: dict[int, tuple[list[Path], str]], work: Path, steps: int) -> None:
    print(
        "\n| battles | generate b/s | transitions | file B/tr | compile tr/s | compile peak GB "
        "| cache B/tr | shards | train steps/s | batch ms | trial peak GB | trial private GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, (paths, generated) in files.items():
        cache = work / f"cache-new-{size}"
        shutil.rmtree(cache, ignore_errors=True)
        compiled = _child(_COMPILE, [str(cache), "100000", *map(str, paths)])
        trial = _child(_TRAIN, [compiled["dataset"], str(cache), str(steps)])
        n = compiled["transitions"]
        file_bytes = sum(path.stat().st_size for path in paths)
        print(
            f"| {size:,} | {generated} | {n:,} | {file_bytes / n:.0f} | "
            f"{n / compiled['seconds']:,.0f} | {_gb(compiled['peak_rss'])} | "
            f"{compiled['cache_bytes'] / n:.0f} | {compiled['shards']} | "
            f"{trial['steps_per_s']:.1f} | {trial['batch_ms']:.1f} | "
            f"{_gb(trial['peak_rss'])} | {_gb(trial['anon'])} |"
        )
        shutil.rmtree(cache, ignore_errors=True)


def _before_after(path: Path, base: Path, label: str, work: Path, steps: int) -> None:
    print(
        "\n| code | compile s | compile peak GB | cache B/tr | shards | train steps/s | batch ms "
        "| trial peak GB | trial private GB | q_loss after the steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = (
        (f"before ({label})", base, 0),
        ("after", ROOT, 100_000),
        ("after, shards of 10,000 rows", ROOT, 10_000),
    )
    for name, root, shard_rows in runs:
        cache = work / f"cache-{name.split()[0]}"
        shutil.rmtree(cache, ignore_errors=True)
        compiled = _child(_COMPILE, [str(cache), str(shard_rows), str(path)], code_root=root)
        trial = _child(_TRAIN, [str(path), str(cache), str(steps)], code_root=root)
        print(
            f"| {name} | {compiled['seconds']:.1f} | {_gb(compiled['peak_rss'])} | "
            f"{compiled['cache_bytes'] / compiled['transitions']:.0f} | {compiled['shards']} | "
            f"{trial['steps_per_s']:.1f} | {trial['batch_ms']:.1f} | "
            f"{_gb(trial['peak_rss'])} | {_gb(trial['anon'])} | {trial['q_loss']:.6f} |"
        )
        shutil.rmtree(cache, ignore_errors=True)


def _rounds_table(rounds: list[Path], base: Path, work: Path) -> None:
    print("| round | before: recombine + recompile s | after: compile the round + concat s |")
    print("|---|---|---|")
    times = []
    for code, root in ((_ROUNDS_OLD, base), (_ROUNDS_NEW, ROOT)):
        cache = work / "cache-rounds"
        shutil.rmtree(cache, ignore_errors=True)
        times.append(_child(code, [str(cache), str(work), *map(str, rounds)], code_root=root))
        shutil.rmtree(cache, ignore_errors=True)
    for k, (before, after) in enumerate(zip(*times, strict=True), 1):
        print(f"| {k} | {before:.1f} | {after:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="400,4000,40000")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--compare", type=int, default=4000)
    parser.add_argument("--baseline", default="d2b8267")
    parser.add_argument("--import-battles", type=int, default=400)
    parser.add_argument("--round-battles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--generation",
        type=int,
        default=0,
        help="only compare generating N battles via the file and straight into shards",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import numpy
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy "
        f"{numpy.__version__}; one torch thread per child"
    )
    if args.generation:
        _generation_table(args.work, args.generation, repeats=2)
        return
    files = _sizes(args.sizes, args.work)
    rate = _import_rate(args.work, args.import_battles)
    print(
        f"import: {rate:.1f} battles/s ({args.import_battles} battles as server logs, 2 workers)"
    )
    _scale_table(files, args.work, args.steps)
    base = _baseline(args.baseline)
    path = files[args.compare][0][0]
    print(f"\nbefore/after at {args.compare:,} battles (before: {args.baseline}, same machine)")
    _before_after(path, base, args.baseline, args.work, args.steps)
    rounds = _round_files(path, args.work, args.rounds, args.round_battles)
    print(
        f"\nflywheel data time per round ({args.rounds} rounds of {args.round_battles:,} "
        "battles; seconds until round k's combined dataset is compiled)"
    )
    _rounds_table(rounds, base, args.work)


if __name__ == "__main__":
    main()
