"""Peak memory of `data import` on hostile and ordinary inputs (issue #33's bounded claim).

Each case runs `import_battles` with the default `ReadLimits` in a child process (this
script's `child` mode), which reports its own peak RSS (`RUSAGE_SELF`: the importer's
Python process, reading and verifying) and its children's (`RUSAGE_CHILDREN`: the largest
node simulator worker); the parent's `os.wait4` gives the largest of the whole tree. On
Linux a process starts with its parent's peak as its own, so the inputs are written by
another child (`prepare`) and the measuring parent stays small (its peak is printed).
Cases:
- bomb: a `.jsonl.gz` of zero bytes that decompresses to 3 GB (one endless line);
- line: a `.jsonl` whose one line is 1 GiB (a real server log padded with spaces);
- ordinary: 1,000 server logs of generated battles (each imported), as files and as one
  `.jsonl.gz` (streamed: the importer's peak must not grow with the file);
- baseline: an empty file (the importer's code and an open simulator pool, nothing read).
The bomb and the line must be refused with their reasons at under 500 MB peak.

usage: python benchmarks/bench_import_hostile.py [--battles 1000] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

GB = 1000**3
GIB = 1 << 30
MIB = 1 << 20


def _machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return (
        f"{platform.system()} {platform.release()}, {model}, {os.cpu_count()} CPUs, "
        f"{memory:.0f} GiB RAM, Python {platform.python_version()}"
    )


def _bomb(path: Path, size: int) -> None:
    """`size` zero bytes, gzip (level 9: about 1,000 to 1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(64 * MIB)
    with path.open("wb") as file:
        for _ in range(size // len(block)):
            file.write(compressor.compress(block))
        file.write(compressor.compress(bytes(size % len(block))))
        file.write(compressor.flush())


def _line(path: Path, log: dict[str, Any], size: int) -> None:
    """One JSON line of `size` bytes: a real log with spaces before its last brace."""
    text = json.dumps(log)
    pad = size - len(text) - 1
    block = b" " * (64 * MIB)
    with path.open("wb") as file:
        file.write(text[:-1].encode())
        for _ in range(pad // len(block)):
            file.write(block)
        file.write(b" " * (pad % len(block)) + b"}\n")


def _logs(folder: Path, battles: int, workers: int) -> dict[str, Any]:
    from poke_tune.data.generate import generate_dataset
    from tests.data.test_importer import server_log

    folder.mkdir(parents=True, exist_ok=True)
    first: dict[str, Any] = {}

    def write(result: Any) -> None:
        log = server_log(result)
        first.setdefault("log", log)
        (folder / f"gen9randombattle-{result.spec.index}.log.json").write_text(json.dumps(log))

    generate_dataset(
        folder.parent / "generated.jsonl.gz",
        policies=["max-damage", "heuristic"],
        battles=battles,
        seed=33,
        num_workers=workers,
        on_result=write,
        keep_logs=True,
    )
    return first["log"]


def child(source: Path, out: Path, workers: int) -> None:
    """Import `source` with the default limits; print what happened as JSON."""
    from poke_tune.data.importer import MixedFormatsError, NothingImportedError, import_battles

    started = time.perf_counter()
    try:
        summary = import_battles([source], out, num_workers=workers)
    except (NothingImportedError, MixedFormatsError) as error:
        summary = error.summary
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    node = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "read": summary.read,
                "imported": summary.imported,
                "refused": summary.refused_by_reason(),
                "detail": summary.refusals[0].detail if summary.refusals else "",
                "own_peak": own,
                "node_peak": node,
            }
        )
    )


def _measure(source: Path, out: Path, workers: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "child", str(source), str(out), str(workers)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True) as process:
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child failed ({process.returncode}) on {source}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["tree_peak"] = usage.ru_maxrss * 1024  # KiB; the largest of it and its children
    return result


def prepare(work: Path, battles: int, workers: int) -> None:
    """Write the inputs (in a child: the measuring parent must stay small, since a child
    process starts with its parent's peak RSS as its own)."""
    started = time.perf_counter()
    log = _logs(work / "logs", battles, workers)
    print(f"generated {battles} logs in {time.perf_counter() - started:.0f} s", flush=True)
    for folder in ("bomb", "line", "empty", "jsonl"):
        (work / folder).mkdir(exist_ok=True)
    with gzip.open(work / "jsonl" / "logs.jsonl.gz", "wt") as file:
        for path in sorted((work / "logs").iterdir()):
            file.write(path.read_text() + "\n")
    _bomb(work / "bomb" / "bomb.jsonl.gz", 3 * GB)
    _line(work / "line" / "line.jsonl", log, GIB)
    (work / "empty" / "empty.jsonl").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--battles", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp one)")
    args = parser.parse_args()
    os.environ.setdefault("POKE_TUNE_NAME_KEY", "bench-" + "k" * 40)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "prepare", str(work), str(args.battles)]
        subprocess.run([*command, str(args.workers)], check=True)
        bomb, line = work / "bomb" / "bomb.jsonl.gz", work / "line" / "line.jsonl"
        cases = [
            ("baseline: an empty JSONL", work / "empty" / "empty.jsonl", "0 bytes"),
            ("3 GB gzip bomb (zeros)", bomb, f"{bomb.stat().st_size / MIB:.1f} MiB .jsonl.gz"),
            ("1 GiB one-line log", line, f"{line.stat().st_size / MIB:.0f} MiB .jsonl"),
            (f"{args.battles:,} ordinary logs", work / "logs", f"{args.battles} .log.json"),
            (
                f"the same {args.battles:,} logs as one JSONL",
                work / "jsonl" / "logs.jsonl.gz",
                f"{(work / 'jsonl' / 'logs.jsonl.gz').stat().st_size / MIB:.1f} MiB .jsonl.gz",
            ),
        ]
        parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rows = []
        for name, source, size in cases:
            out = work / f"out-{source.name}.jsonl.gz"
            out.unlink(missing_ok=True)
            result = _measure(source, out, args.workers)
            refused = ", ".join(f"{n} {why}" for why, n in result["refused"].items()) or "none"
            rows.append(
                f"| {name} | {size} | {result['own_peak'] / MIB:.0f} MiB | "
                f"{result['node_peak'] / MIB:.0f} MiB | {result['tree_peak'] / MIB:.0f} MiB | "
                f"{result['imported']} | {refused} | {result['seconds']:.1f} |"
            )
            print(f"{name}: {result}", flush=True)
    print()
    print(
        f"Machine: {_machine()}; workers {args.workers}; default `ReadLimits`; the measuring "
        f"parent's own peak (a floor of every child's) {parent / MIB:.0f} MiB."
    )
    print()
    print(
        "| input | on disk | peak RSS, importer (Python) | largest node worker | "
        "whole tree (`wait4`) | imported | refused | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
