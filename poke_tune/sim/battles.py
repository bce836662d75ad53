"""Play many seeded battles in parallel on a pool of persistent node worker processes.

Each worker (`js/worker.js`) multiplexes several battles, each on the package's own
server-less `BattleStream`. One loop on the caller's thread polls every worker's output
with a selector (no reader threads), tracks each battle's public state, asks the right
policy for each request and writes the choice back, while the workers simulate other
battles.

Failure handling: a worker that exits, or sends nothing for `timeout_s` while it owes
output, is killed and restarted, and its battles are replayed from the start with the
same seeds (battles are reproducible, so a replay is the same battle). After
`max_attempts` a battle is reported as failed in its `BattleResult`, never dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import orjson

from poke_tune.sim.actions import action_to_choice, legal_action_mask
from poke_tune.sim.battle_records import (
    SIDES,
    BattleResult,
    BattleSpec,
    Trajectory,
    battle_seeds,
    hp_balance,
)
from poke_tune.sim.dex import load_dex
from poke_tune.sim.encoding import ObservationEncoder
from poke_tune.sim.frames import FrameReader, encode_command
from poke_tune.sim.policies import PlayerView
from poke_tune.sim.runtime import WORKER_SCRIPT, ShowdownRuntime, find_runtime
from poke_tune.sim.state import BattleState

__all__ = ["Session", "SimulatorError", "SimulatorPool"]

_logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 18  # bytes per read: a pipe holds 64 KiB, so one read empties it


class SimulatorError(RuntimeError):
    """The simulator cannot run as asked (a missing install, a format it refuses), as
    opposed to a single battle's failure."""


class _Outcome(Protocol):
    """What the pool needs of a session's result: how often it ran, and why it failed."""

    attempts: int
    error: str | None


_Item_co = TypeVar("_Item_co", covariant=True)
_Result_co = TypeVar("_Result_co", bound=_Outcome, covariant=True)
_Item = TypeVar("_Item")
_Result = TypeVar("_Result", bound=_Outcome)


class Session(Protocol[_Item_co, _Result_co]):
    """The Python half of one battle on a worker: what to write first, what to answer to
    each chunk, and the result once `finished`. A session is rebuilt from its `item` when
    its worker dies (battles are reproducible, so the replay is the same battle)."""

    finished: bool

    @property
    def item(self) -> _Item_co: ...

    @property
    def result(self) -> _Result_co: ...

    def start_commands(self) -> list[str]: ...

    def on_chunk(self, chunk: str) -> list[str]: ...


class _Battle:
    """The Python half of one battle: state tracking, decisions and recording."""

    def __init__(
        self, spec: BattleSpec, encoder: ObservationEncoder, attempt: int, keep_log: bool
    ) -> None:
        self.spec = spec
        self.encoder = encoder
        self.state = BattleState()
        self.rngs = {side: spec.policy_rng(side) for side in SIDES}
        self.result = BattleResult(spec=spec, attempts=attempt)
        self.keep_log = keep_log
        self.truncating = False
        self.final_sides: set[str] = set()
        self.finished = False
        for side, record in zip(SIDES, spec.record, strict=True):
            if record:
                self.result.trajectories[side] = Trajectory(side, spec.policy(side).name)

    @property
    def item(self) -> BattleSpec:
        return self.spec

    def start_commands(self) -> list[str]:
        battle, p1, p2 = battle_seeds(self.spec.seed, self.spec.index)
        start = {"formatid": self.spec.battle_format, "seed": battle}
        return [
            f">start {orjson.dumps(start).decode()}",
            f'>player p1 {{"name":"p1","seed":{p1}}}',
            f'>player p2 {{"name":"p2","seed":{p2}}}',
        ]

    def on_chunk(self, chunk: str) -> list[str]:
        """Handle one stream chunk; returns the commands to send back."""
        kind, _, body = chunk.partition("\n")
        if kind == "update":
            self.state.apply(body)
            if self.keep_log:
                self.result.log.extend(ln for ln in body.split("\n") if not ln.startswith("|t:|"))
            if self.state.turn > self.spec.max_turns:
                self.truncating = True
        elif kind == "sideupdate":
            side, _, message = body.partition("\n")
            if message.startswith("|request|"):
                return self._on_request(side, orjson.loads(message[len("|request|") :]))
            if message.startswith("|error|[Invalid choice]"):
                _logger.warning("battle %d: %s", self.spec.index, message)
                self.result.invalid_choices += 1
                return [f">{side} default"]
            # "[Unavailable choice]": hidden information; a fresh request follows.
        elif kind == "end":
            self._on_end(orjson.loads(body))
        elif kind == "error":  # the JS exception and its stack: keep the message line
            message = body.strip().splitlines()[0] if body.strip() else "no message"
            raise SimulatorError(
                f"the simulator refused battle {self.spec.index} of format "
                f"{self.spec.battle_format!r}: {message}"
            )
        return []

    def _on_request(self, side: str, request: dict[str, Any]) -> list[str]:
        trajectory = self.result.trajectories.get(side)
        if self.truncating:
            # Cut off at the turn limit: keep s' for bootstrapping, then end as a tie
            # once both players' requests are in.
            if trajectory is not None:
                trajectory.final_observation = self.encoder.encode(side, request, self.state)
                trajectory.final_mask = legal_action_mask(request)
            self.final_sides.add(side)
            return [">forcetie"] if len(self.final_sides) == len(SIDES) else []
        if request.get("teamPreview"):
            return [f">{side} default"]
        mask = legal_action_mask(request)
        if not mask.any():  # a `wait` request: the other player is choosing
            return []
        view = PlayerView(side, request, self.state, mask, self.encoder)
        policy = self.spec.policy(side)
        action = policy.act(view, self.rngs[side])
        if not mask[action]:
            raise ValueError(f"policy {policy.name!r} chose illegal action {action}")
        if trajectory is not None:
            trajectory.observations.append(view.observation)
            trajectory.masks.append(mask)
            trajectory.actions.append(action)
            trajectory.hp_balance.append(hp_balance(self.state, side))
        return [f">{side} {action_to_choice(action)}"]

    def _on_end(self, summary: dict[str, Any]) -> None:
        winner = summary.get("winner") or None
        self.result.winner = winner if winner in SIDES else None
        self.result.turns = int(summary.get("turns", self.state.turn))
        self.result.input_log = summary.get("inputLog", [])
        self.result.truncated = self.truncating
        for side, trajectory in self.result.trajectories.items():
            if self.result.winner is not None:
                trajectory.outcome = 1.0 if self.result.winner == side else -1.0
            trajectory.final_hp_balance = hp_balance(self.state, side)
        self.finished = True


class _Worker:
    """One node process. No threads read it: its stdout and stderr are non-blocking and
    the pool polls them with a selector on its own thread, so a batch of frames is read
    with one system call and handled without queue hand-offs or GIL contention."""

    def __init__(self, slot: int, runtime: ShowdownRuntime) -> None:
        self.slot = slot
        self.runtime = runtime
        self.battles: set[int] = set()
        self.last_output = time.monotonic()
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.failed_starts = 0  # consecutive deaths before any output: a broken install
        self.produced_output = False
        self.frames = FrameReader()
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "POKE_TUNE_SHOWDOWN_PKG": str(self.runtime.package_dir)}
        proc = subprocess.Popen(
            [self.runtime.node, str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        self.frames = FrameReader()
        self.last_output = time.monotonic()
        self.produced_output = False
        return proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout_fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    @property
    def stderr_fd(self) -> int:
        assert self.proc.stderr is not None
        return self.proc.stderr.fileno()

    def read_frames(self) -> list[tuple[int, str]] | None:
        """The frames completed by what stdout holds now; None once stdout is closed."""
        try:
            data = os.read(self.stdout_fd, _READ_SIZE)
        except BlockingIOError:  # woken for nothing
            return []
        if not data:
            return None  # EOF: the process is gone
        return self.frames.feed(data)

    def read_stderr(self) -> bool:
        """Keep the tail of stderr for error messages; False once stderr is closed."""
        try:
            data = os.read(self.stderr_fd, _READ_SIZE)
        except BlockingIOError:
            return True
        # A line split across two reads shows as two lines: fine for a diagnostic tail.
        self.stderr_tail.extend(data.decode(errors="replace").splitlines())
        return bool(data)

    def send(self, battle_id: int, commands: list[str]) -> None:
        """Queue commands for one battle; `flush` writes them.

        The write may block only while the pipe is full, and the pool sends at most a
        few hundred bytes per battle before waiting for that battle's next output.
        """
        assert self.proc.stdin is not None
        # On a dead process the stdout EOF reports the death; the battles are replayed.
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(encode_command(battle_id, commands))

    def flush(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.flush()

    def restart(self) -> None:
        self.kill()
        self.battles.clear()
        self.stderr_tail.clear()
        self.proc = self._spawn()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class SimulatorPool:
    """A pool of persistent node simulator workers; use as a context manager.

    Args:
        num_workers: node processes (default: the machine's CPU count).
        battles_per_worker: battles multiplexed on one worker, so that the worker always
            has work while Python is choosing actions for other battles.
        timeout_s: a worker that owes output and sends none for this long is restarted.
        max_attempts: plays of one battle before it is reported as failed.
    """

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        battles_per_worker: int = 8,
        timeout_s: float = 60.0,
        max_attempts: int = 3,
        runtime: ShowdownRuntime | None = None,
    ) -> None:
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers or os.cpu_count() or 1
        self.battles_per_worker = battles_per_worker
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.runtime = runtime or find_runtime()
        self.restarts = 0
        self._workers: list[_Worker] = []
        self._selector: selectors.BaseSelector | None = None
        self._next_id = 1  # battle ids stay unique across `play` calls
        self._encoders: dict[str, ObservationEncoder] = {}

    def __enter__(self) -> SimulatorPool:
        self._selector = selectors.DefaultSelector()
        self._workers = [_Worker(i, self.runtime) for i in range(self.num_workers)]
        for worker in self._workers:
            self._watch(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            worker.kill()
        self._workers = []
        if self._selector is not None:
            self._selector.close()
            self._selector = None

    def _watch(self, worker: _Worker) -> None:
        assert self._selector is not None
        self._selector.register(worker.stdout_fd, selectors.EVENT_READ, (worker, True))
        self._selector.register(worker.stderr_fd, selectors.EVENT_READ, (worker, False))

    def _unwatch_stderr(self, worker: _Worker) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.stderr_fd)

    def _restart(self, worker: _Worker) -> None:
        assert self._selector is not None
        self._unwatch_stderr(worker)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.stdout_fd)
        worker.restart()
        self._watch(worker)

    def worker_pids(self) -> list[int]:
        """Process ids of the node workers (for monitoring, and crash tests)."""
        return [worker.pid for worker in self._workers]

    def encoder(self, battle_format: str) -> ObservationEncoder:
        """The observation encoder of `battle_format` (built once per pool)."""
        if battle_format not in self._encoders:
            self._encoders[battle_format] = ObservationEncoder(load_dex(battle_format))
        return self._encoders[battle_format]

    def play(
        self, specs: Iterable[BattleSpec], *, keep_logs: bool = False
    ) -> Iterator[BattleResult]:
        """Play every battle in `specs`; yields one result per spec, in completion order."""

        def open_battle(spec: BattleSpec, attempt: int) -> _Battle:
            return _Battle(spec, self.encoder(spec.battle_format), attempt, keep_logs)

        return self.run(specs, open_battle)

    def run(
        self,
        items: Iterable[_Item],
        open_session: Callable[[_Item, int], Session[_Item, _Result]],
    ) -> Iterator[_Result]:
        """Run one session per item (`open_session(item, attempt)`) on the workers; yields
        each session's result in completion order. `play` and `sim.replay` use it."""
        if not self._workers or self._selector is None:
            raise RuntimeError("SimulatorPool.play() needs the pool opened: use `with pool:`")
        return self._run(items, open_session)

    def _run(
        self,
        items: Iterable[_Item],
        open_session: Callable[[_Item, int], Session[_Item, _Result]],
    ) -> Iterator[_Result]:
        selector = self._selector
        assert selector is not None
        for worker in self._workers:
            if worker.battles:  # left over by a `play` that was abandoned part-way
                self._restart(worker)
        pending: deque[tuple[_Item, int]] = deque((item, 1) for item in items)
        active: dict[int, Session[_Item, _Result]] = {}

        def start(item: _Item, attempt: int, worker: _Worker) -> None:
            session = open_session(item, attempt)
            battle_id = self._next_id
            self._next_id += 1
            active[battle_id] = session
            worker.battles.add(battle_id)
            worker.send(battle_id, session.start_commands())

        def fail_worker(worker: _Worker, reason: str) -> Iterator[_Result]:
            stderr = "\n".join(worker.stderr_tail)
            worker.failed_starts = 0 if worker.produced_output else worker.failed_starts + 1
            if worker.failed_starts >= self.max_attempts:
                raise SimulatorError(
                    f"simulator worker {worker.slot} {reason} {worker.failed_starts} times "
                    f"before any output; stderr:\n{stderr or '(empty)'}"
                )
            _logger.warning(
                "simulator worker %d %s; restarting it. stderr: %s",
                worker.slot,
                reason,
                stderr or "(empty)",
            )
            self.restarts += 1
            lost = [active.pop(battle_id) for battle_id in sorted(worker.battles)]
            self._restart(worker)
            for session in lost:
                if session.result.attempts >= self.max_attempts:
                    attempts = session.result.attempts
                    session.result.error = f"worker {reason} on each of {attempts} attempts"
                    yield session.result
                else:
                    pending.appendleft((session.item, session.result.attempts + 1))

        while pending or active:
            for worker in self._workers:
                while pending and len(worker.battles) < self.battles_per_worker:
                    if not worker.battles:
                        worker.last_output = time.monotonic()
                    start(*pending.popleft(), worker)
                worker.flush()
            ready = selector.select(timeout=min(1.0, self.timeout_s))
            now = time.monotonic()
            for key, _ in ready:
                # Through the worker, not key.fd: a restart may have replaced the process.
                worker, is_stdout = key.data
                if not is_stdout:
                    if not worker.read_stderr():
                        self._unwatch_stderr(worker)  # closed: would always poll readable
                    continue
                frames = worker.read_frames()
                if frames is None:
                    yield from fail_worker(worker, f"exited with code {worker.proc.wait()}")
                    continue
                worker.last_output = now
                worker.produced_output = True
                for battle_id, chunk in frames:
                    battle = active.get(battle_id)
                    if battle is None:
                        continue  # a battle given up on, e.g. after a restart; or "closed"
                    commands = battle.on_chunk(chunk)
                    if commands:
                        worker.send(battle_id, commands)
                    if battle.finished:
                        del active[battle_id]
                        worker.battles.discard(battle_id)
                        yield battle.result
            for worker in self._workers:
                if worker.battles and now - worker.last_output > self.timeout_s:
                    yield from fail_worker(worker, f"sent nothing for {self.timeout_s:.0f} s")
