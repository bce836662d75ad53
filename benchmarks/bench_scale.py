"""Datasets at scale: bytes, compile and training memory, and a round's data cost, by size.

For each size (battles of the quick start's recipe: random + max-damage:softmax=0.3, HP
shaping 1.0), in one run on this machine:
1. the trajectory file: generated once (battles/s) and kept in `--work`; sizes above the
   largest generated one are that file repeated under new replay ids (`--repeat`), which
   measures storage, compile and training at that size (not new battles: say so);
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

usage: python benchmarks/bench_scale.py [--sizes 400,4000,40000] [--work /tmp/bench-scale]
       [--steps 300] [--compare 4000] [--baseline d2b8267] [--round-battles 1000]
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
from poke_tune.data.compiled import load_dataset
source, cache = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
dataset = load_dataset(source, cache_root=cache)
seconds = time.perf_counter() - started
cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
print(json.dumps({"transitions": dataset.num_transitions, "seconds": seconds,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "cache_bytes": cache_bytes}))
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
before = status()
config = TrainConfig(steps=steps + 20, batch_size=256, fqe_steps=0, device="cpu", seed=0)
trainer = Trainer(CQLConfig(network=NetworkConfig(kind="action")), config, dataset)
trainer.train(20)
started = time.perf_counter()
metrics = trainer.train(steps + 20)
seconds = time.perf_counter() - started
after = status()
print(json.dumps({"steps_per_s": steps / seconds, "peak_rss": after["VmHWM"],
    "anon_before": before["RssAnon"], "anon": after["RssAnon"], "file": after["RssFile"],
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


def _repeated(work: Path, source: Path, copies: int, battles: int) -> Path:
    """`source` written `copies` times under new replay ids (the same battles again)."""
    from poke_tune.data.jsonl import TrajectoryWriter, open_trajectories

    path = work / f"battles-{battles}-repeated.jsonl.gz"
    if path.is_file():
        return path
    partial = path.with_name(f"partial-{path.name}")
    with open_trajectories(source) as (header, _), TrajectoryWriter(partial, header) as writer:
        for copy in range(copies):
            with open_trajectories(source) as (_, records):
                for _, record in records:
                    writer.write(
                        record.model_copy(update={"replay_id": f"{record.replay_id}~{copy}"})
                    )
    partial.replace(path)
    return path


def _import_rate(work: Path, battles: int) -> float:
    """Battles/s of `data import` over server logs of `battles` freshly played battles."""
    from poke_tune.data.generate import generate_dataset
    from poke_tune.data.importer import import_battles
    from tests.data.test_importer import server_log

    logs = Path(tempfile.mkdtemp(dir=work, prefix="logs-"))
    results = []
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
    started = time.perf_counter()
    summary = import_battles(
        [logs], work / f"imported-{battles}.jsonl.gz", num_workers=2, overwrite=True
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(logs)
    assert summary.imported == battles, summary.refused_by_reason()
    return battles / seconds


def _baseline(commit: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"poke-tune-baseline-{commit}"
    if not folder.is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True
        )
    return folder


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,4000,40000")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--compare", type=int, default=4000)
    parser.add_argument("--baseline", default="d2b8267")
    parser.add_argument("--import-battles", type=int, default=400)
    parser.add_argument("--round-battles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import numpy
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy "
        f"{numpy.__version__}; one torch thread per child"
    )
    sizes = [int(size) for size in args.sizes.split(",")]
    files: dict[int, tuple[Path, str]] = {}
    largest: tuple[int, Path] | None = None
    for size in sizes:
        if largest is not None and size > largest[0] and size % largest[0] == 0 and size >= 20000:
            path = _repeated(args.work, largest[1], size // largest[0], size)
            files[size] = (path, f"{largest[0]:,} x {size // largest[0]}")
            continue
        path, rate = _generated(args.work, size)
        files[size] = (path, f"{rate:.1f}" if rate else "cached")
        largest = (size, path)
    print(
        f"import: {_import_rate(args.work, args.import_battles):.1f} battles/s "
        f"({args.import_battles} battles as server logs, 2 workers)"
    )

    print(
        "\n| battles | generate b/s | transitions | file B/tr | compile tr/s | compile peak GB "
        "| cache B/tr | train steps/s | trial peak GB | trial private GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        path, generated = files[size]
        cache = args.work / f"cache-new-{size}"
        shutil.rmtree(cache, ignore_errors=True)
        compiled = _child(_COMPILE, [str(path), str(cache)])
        trial = _child(_TRAIN, [str(path), str(cache), str(args.steps)])
        n = compiled["transitions"]
        print(
            f"| {size:,} | {generated} | {n:,} | {path.stat().st_size / n:.0f} | "
            f"{n / compiled['seconds']:,.0f} | {_gb(compiled['peak_rss'])} | "
            f"{compiled['cache_bytes'] / n:.0f} | {trial['steps_per_s']:.1f} | "
            f"{_gb(trial['peak_rss'])} | {_gb(trial['anon'])} |"
        )

    base = _baseline(args.baseline)
    path = files[args.compare][0]
    print(f"\nbefore/after at {args.compare:,} battles (before: {args.baseline}, same machine)")
    print(
        "| code | compile s | compile peak GB | cache B/tr | train steps/s | trial peak GB "
        "| trial private GB | q_loss after the steps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, root in ((f"before ({args.baseline})", base), ("after", ROOT)):
        cache = args.work / f"cache-{label.split()[0]}-{args.compare}"
        shutil.rmtree(cache, ignore_errors=True)
        compiled = _child(_COMPILE, [str(path), str(cache)], code_root=root)
        trial = _child(_TRAIN, [str(path), str(cache), str(args.steps)], code_root=root)
        print(
            f"| {label} | {compiled['seconds']:.1f} | {_gb(compiled['peak_rss'])} | "
            f"{compiled['cache_bytes'] / compiled['transitions']:.0f} | "
            f"{trial['steps_per_s']:.1f} | {_gb(trial['peak_rss'])} | {_gb(trial['anon'])} | "
            f"{trial['q_loss']:.6f} |"
        )

    rounds = _round_files(files[args.compare][0], args.work, args.rounds, args.round_battles)
    print(
        f"\nflywheel data time per round ({args.rounds} rounds of {args.round_battles:,} "
        "battles; seconds to have round k's combined dataset compiled)"
    )
    old = _child(
        _ROUNDS_OLD,
        [str(args.work / "cache-rounds-old"), str(args.work), *map(str, rounds)],
        code_root=base,
    )
    new = _child(
        _ROUNDS_NEW, [str(args.work / "cache-rounds-new"), str(args.work), *map(str, rounds)]
    )
    print("| round | before: recombine + recompile s | after: compile the round + concat s |")
    print("|---|---|---|")
    for k, (before, after) in enumerate(zip(old, new, strict=True), 1):
        print(f"| {k} | {before:.1f} | {after:.1f} |")
    for name in ("cache-rounds-old", "cache-rounds-new"):
        shutil.rmtree(args.work / name, ignore_errors=True)


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


if __name__ == "__main__":
    main()
