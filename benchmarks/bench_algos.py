"""Training throughput: poke-tune's BC/IQL/CQL updates vs a seed-style IQL pipeline.

Runs, in one process on this machine (CPU, torch's default threads):
1. a real dataset: `--battles` random/max-damage battles, generated and compiled;
2. seed-style IQL, the design poke-tune replaced: per-transition dicts, a torch Dataset
   that builds tensors per item, a shuffling DataLoader with the default collate, and
   twin Q(concat(s, one_hot(a))) -> scalar networks; DataLoader time is included;
3. poke-tune's `Trainer.train` for BC, IQL and CQL with their default configs, timed in
   rounds interleaved with the seed-style pipeline (noise from elsewhere hits all alike);
4. the float32 matmul ceiling: the best of the torch.mm/torch.bmm shapes the updates run;
5. a torch.profiler pass over each poke-tune pipeline: the share of its step spent in
   matmuls and their rate there. FLOPs / matmul time is what a step made of nothing but
   its own matmuls would reach: the bound for these shapes, however lean the rest;
6. BC, IQL and CQL with action-centric networks (`network.kind: action`, default sizes),
   timed in the same interleaved rounds: ms/step against the flat network of the same
   algorithm and batch (target, issue 19: at most 1.5x the flat step time on CPU).
FLOPs per step are counted from the networks' nn.Linear and VectorizedLinear shapes (see
`mlp_flops`).

usage: python benchmarks/bench_algos.py [--battles 150] [--steps 300] [--warmup 20]
       [--rounds 5] [--threads N] [--profile-steps 50]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from poke_tune.algos.bc import BC, BCConfig
from poke_tune.algos.cql import CQL, CQLConfig
from poke_tune.algos.iql import IQL, IQLConfig
from poke_tune.algos.networks import NetworkConfig, VectorizedLinear, mlp
from poke_tune.algos.trainer import TrainConfig, Trainer
from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset

BATCH = 256
TARGETS = (
    "targets (issues): IQL >= 3x seed-style, IQL >= 70% of the matmul ceiling; "
    "action-centric <= 1.5x the flat step time"
)


# -- FLOP counting ---------------------------------------------------------------------------


def linear_shapes(net: nn.Module) -> list[tuple[int, int, int]]:
    """(members, in, out) of each linear layer of `net` in order; a VectorizedLinear layer
    holds `members` independent layers."""
    shapes = []
    for module in net.modules():
        if isinstance(module, nn.Linear):
            shapes.append((1, module.in_features, module.out_features))
        elif isinstance(module, VectorizedLinear):
            shapes.append((module.weight.shape[0], module.in_features, module.out_features))
    return shapes


def mlp_flops(net: nn.Module, batch: int, *, trained: bool) -> float:
    """Matmul FLOPs of one pass of `net` over `batch` rows.

    Convention: a linear layer's forward costs 2 * B * in * out per member. A trained pass
    (forward and backward) costs 3x that (forward, grad wrt input, grad wrt weight), except
    the first layer, whose input (observation or (s, a) features) needs no gradient: 2x. A
    no-grad forward costs 1x. Bias adds, ReLU, LayerNorm, losses and optimizer steps are
    ignored.
    """
    forwards = [2.0 * batch * members * i * o for members, i, o in linear_shapes(net)]
    if not trained:
        return sum(forwards)
    return 2 * forwards[0] + 3 * sum(forwards[1:])


def ensemble_flops(nets: Iterable[nn.Module], batch: int, *, trained: bool) -> float:
    return sum(mlp_flops(net, batch, trained=trained) for net in nets)


def flops_per_step(algorithm: object, batch: int) -> float:
    """FLOPs of one `update`, pass by pass as the algorithm's code runs them."""
    if isinstance(algorithm, BC):
        return mlp_flops(algorithm.policy, batch, trained=True)
    if isinstance(algorithm, IQL):
        return (
            mlp_flops(algorithm.q_target, batch, trained=False)  # Q_target(s)
            + mlp_flops(algorithm.v, batch, trained=True)  # V(s), V update
            + mlp_flops(algorithm.v, batch, trained=False)  # V(s) again for the advantage
            + mlp_flops(algorithm.policy, batch, trained=True)  # policy update
            + mlp_flops(algorithm.v, batch, trained=False)  # V(s') for the Q targets
            + mlp_flops(algorithm.q, batch, trained=True)  # Q update
        )
    if isinstance(algorithm, CQL):
        return (
            mlp_flops(algorithm.q, batch, trained=False)  # Q(s') for the argmax
            + mlp_flops(algorithm.q_target, batch, trained=False)  # Q_target(s')
            + mlp_flops(algorithm.q, batch, trained=True)  # Q(s), Q update
        )
    if isinstance(algorithm, SeedIQL):
        return (
            ensemble_flops(algorithm.q_targets, batch, trained=False)
            + mlp_flops(algorithm.v, batch, trained=True)
            + 2 * mlp_flops(algorithm.v, batch, trained=False)  # V(s) advantage, V(s')
            + mlp_flops(algorithm.policy, batch, trained=True)
            + ensemble_flops(algorithm.qs, batch, trained=True)
        )
    raise TypeError(f"no FLOP count for {type(algorithm).__name__}")


# -- seed-style IQL (the replaced design) ----------------------------------------------------

_DTYPES = {
    "obs": torch.float32,
    "action": torch.int64,
    "reward": torch.float32,
    "next_obs": torch.float32,
    "done": torch.float32,
    "mask": torch.bool,
    "next_mask": torch.bool,
}


class SeedTransitions(Dataset[dict[str, torch.Tensor]]):
    """A list of per-transition dicts; every item becomes fresh tensors in __getitem__."""

    def __init__(self, dataset: OfflineDataset, indices: np.ndarray) -> None:
        obs, masks = np.asarray(dataset.observations), np.asarray(dataset.action_masks)
        self.transitions: list[dict[str, Any]] = []
        for i in indices:
            row = int(dataset.rows[i])
            self.transitions.append(
                {
                    "obs": obs[row].copy(),
                    "action": int(dataset.actions[i]),
                    "reward": float(dataset.rewards[i]),
                    "next_obs": obs[row + 1].copy(),
                    "done": float(dataset.terminals[i]),
                    "mask": masks[row].copy(),
                    "next_mask": masks[row + 1].copy(),
                }
            )

    def __len__(self) -> int:
        return len(self.transitions)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.transitions[index]
        return {key: torch.tensor(item[key], dtype=dtype) for key, dtype in _DTYPES.items()}


class SeedIQL:
    """IQL as the seed wrote it: twin Q(concat(s, one_hot(a))) -> scalar, V, policy."""

    def __init__(self, config: IQLConfig, observation_size: int, num_actions: int) -> None:
        self.config, self.num_actions = config, num_actions
        net = config.network
        self.qs = [mlp(observation_size + num_actions, 1, net) for _ in range(2)]
        self.q_targets = [copy.deepcopy(q).requires_grad_(False) for q in self.qs]
        self.v = mlp(observation_size, 1, net)
        self.policy = mlp(observation_size, num_actions, net)
        q_params = [p for q in self.qs for p in q.parameters()]
        self.q_optimizer = torch.optim.Adam(q_params, lr=config.critic_lr)
        self.v_optimizer = torch.optim.Adam(self.v.parameters(), lr=config.critic_lr)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.actor_lr)

    def update(self, b: dict[str, torch.Tensor]) -> None:
        cfg = self.config
        sa = torch.cat([b["obs"], F.one_hot(b["action"], self.num_actions).float()], dim=1)
        with torch.no_grad():
            target_q = torch.min(self.q_targets[0](sa), self.q_targets[1](sa)).squeeze(1)
        diff = target_q - self.v(b["obs"]).squeeze(1)
        v_loss = (torch.abs(cfg.expectile - (diff < 0).float()) * diff**2).mean()
        _step(self.v_optimizer, v_loss)
        with torch.no_grad():
            advantage = target_q - self.v(b["obs"]).squeeze(1)
            weights = torch.exp(cfg.temperature * advantage).clamp(max=cfg.max_weight)
        logits = self.policy(b["obs"]).masked_fill(~b["mask"], float("-inf"))
        log_pi = F.log_softmax(logits, dim=-1).gather(1, b["action"][:, None]).squeeze(1)
        _step(self.policy_optimizer, -(weights * log_pi).mean())
        with torch.no_grad():
            next_v = self.v(b["next_obs"]).squeeze(1)
            target = b["reward"] + cfg.gamma * (1.0 - b["done"]) * next_v
        q_loss = sum(((q(sa).squeeze(1) - target) ** 2).mean() for q in self.qs)
        _step(self.q_optimizer, q_loss)
        for q_target, q in zip(self.q_targets, self.qs, strict=True):
            for target_param, param in zip(q_target.parameters(), q.parameters(), strict=True):
                target_param.data.mul_(1.0 - cfg.tau).add_(cfg.tau * param.data)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()


def _forever(loader: DataLoader[Any]) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


# -- measurements ----------------------------------------------------------------------------


class Pipeline:
    """A named training pipeline that runs `n` more gradient steps per call."""

    def __init__(self, name: str, run: Callable[[int], object], flops: float) -> None:
        self.name, self.run, self.flops = name, run, flops
        self.rates: list[float] = []  # steps/s of each timed round

    def time_round(self, steps: int) -> None:
        start = time.perf_counter()
        self.run(steps)
        self.rates.append(steps / (time.perf_counter() - start))


def seed_pipeline(dataset: OfflineDataset) -> Pipeline:
    """Seed-style IQL on the trainer's training split (DataLoader time included)."""
    torch.manual_seed(0)
    train_index, _ = dataset.split(TrainConfig().val_fraction, seed=0)
    loader = DataLoader(
        SeedTransitions(dataset, train_index), batch_size=BATCH, shuffle=True, drop_last=True
    )
    algo = SeedIQL(IQLConfig(), dataset.observation_size, dataset.num_actions)
    batches = _forever(loader)

    def run(steps: int) -> None:
        for _ in range(steps):
            algo.update(next(batches))

    return Pipeline("seed-style IQL (DataLoader)", run, flops_per_step(algo, BATCH))


def trainer_pipeline(
    config: BCConfig | IQLConfig | CQLConfig, dataset: OfflineDataset, total_steps: int
) -> Pipeline:
    """`Trainer.train` with batch size BATCH, FQE off."""
    train_config = TrainConfig(batch_size=BATCH, steps=total_steps, fqe_steps=0, device="cpu")
    trainer = Trainer(config, train_config, dataset)
    run = lambda steps: trainer.train(trainer.step + steps)  # noqa: E731
    if config.network.kind == "action":  # its slot layers' rows are not counted: no FLOPs
        return Pipeline(f"poke-tune {config.algo.upper()} action", run, float("nan"))
    flops = flops_per_step(trainer.algorithm, BATCH)
    return Pipeline(f"poke-tune {config.algo.upper()}", run, flops)


def _gflops(run: Callable[[], object], flops: float, min_seconds: float, repeats: int) -> float:
    """Median GFLOP/s of `run` over `repeats` timings of at least `min_seconds` each."""
    calls = 1
    while True:  # calibrate: double the call count until one timing lasts min_seconds
        start = time.perf_counter()
        for _ in range(calls):
            run()
        if time.perf_counter() - start >= min_seconds:
            break
        calls *= 2
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        rates.append(calls * flops / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def matmul_ceiling(
    observation_size: int, hidden: int, critics: int, min_seconds: float = 0.3, repeats: int = 5
) -> tuple[float, str]:
    """Best median float32 GFLOP/s over the update's matmul shapes (and that shape's name):
    the MLPs' torch.mm shapes and the Q ensembles' torch.bmm shapes, forward and backward,
    with the same transposes and the same stride-0 (shared observation) input."""
    b, d, h, e = BATCH, observation_size, hidden, critics

    def time_it(
        label: str, op: Callable[..., torch.Tensor], *args: torch.Tensor
    ) -> tuple[str, float]:
        out = op(*args)
        run = lambda: op(*args, out=out)  # noqa: E731
        return label, _gflops(run, 2.0 * out.numel() * args[0].shape[-1], min_seconds, repeats)

    x, g, w1, w2 = torch.randn(b, d), torch.randn(b, h), torch.randn(h, d), torch.randn(h, h)
    xs, gs = x.expand(e, b, d), torch.randn(e, b, h)
    ws1, ws2 = torch.randn(e, d, h), torch.randn(e, h, h)
    results = [
        time_it(f"fwd [{b}x{d}]@[{d}x{h}]", torch.mm, x, w1.t()),
        time_it(f"fwd [{b}x{h}]@[{h}x{h}]", torch.mm, g, w2.t()),
        time_it(f"dW1 [{h}x{b}]@[{b}x{d}]", torch.mm, g.t(), x),
        time_it(f"dX2 [{b}x{h}]@[{h}x{h}]", torch.mm, g, w2),
        time_it(f"dW2 [{h}x{b}]@[{b}x{h}]", torch.mm, g.t(), g),
        time_it(f"{e}x fwd [{b}x{d}]@[{d}x{h}]", torch.bmm, xs, ws1),
        time_it(f"{e}x fwd [{b}x{h}]@[{h}x{h}]", torch.bmm, gs, ws2),
        time_it(f"{e}x dW1 [{d}x{b}]@[{b}x{h}]", torch.bmm, xs.transpose(1, 2), gs),
        time_it(f"{e}x dX2 [{b}x{h}]@[{h}x{h}]", torch.bmm, gs, ws2.transpose(1, 2)),
        time_it(f"{e}x dW2 [{h}x{b}]@[{b}x{h}]", torch.bmm, gs.transpose(1, 2), gs),
    ]
    label, best = max(results, key=lambda item: item[1])
    return best, label


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def profile_matmuls(pipeline: Pipeline, steps: int) -> tuple[float, float]:
    """(seconds in matmul kernels, seconds in all) per step, over `steps` profiled steps.

    An op's self CPU time is its wall time on the calling thread, so a matmul that
    torch splits over its intra-op threads counts once, for as long as it takes.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        pipeline.run(steps)
        total = time.perf_counter() - start
    matmul_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return matmul_us / 1e6 / steps, total / steps


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=150)
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile-steps", type=int, default=50, help="profiled steps each")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"machine: {platform.node()} | {_cpu_model()} | {os.cpu_count()} CPUs | "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads | "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.jsonl.gz"
        generate_dataset(path, policies=["random", "max-damage"], battles=args.battles, seed=0)
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        print(
            f"dataset: {args.battles} battles, {dataset.num_transitions} transitions, "
            f"observation {dataset.observation_size}, {dataset.num_actions} actions; "
            f"batch {BATCH}, {args.steps} timed steps after {args.warmup} warm-up, in "
            f"{args.rounds} interleaved rounds (steps/s: median round)"
        )
        hidden, critics = max(IQLConfig().network.hidden_sizes), IQLConfig().num_critics
        before, shape = matmul_ceiling(dataset.observation_size, hidden, critics)
        total = args.warmup + args.steps + args.profile_steps
        pipelines = [seed_pipeline(dataset)] + [
            trainer_pipeline(config, dataset, total)
            for config in (BCConfig(), IQLConfig(), CQLConfig())
        ]
        action = NetworkConfig(kind="action")
        action_pipelines = [
            trainer_pipeline(config, dataset, total)
            for config in (
                BCConfig(network=action),
                IQLConfig(network=action),
                CQLConfig(network=action),
            )
        ]
        for pipeline in pipelines + action_pipelines:
            pipeline.run(args.warmup)
        # Interleaved rounds, so that load from elsewhere hits every pipeline alike.
        for _ in range(args.rounds):
            for pipeline in pipelines + action_pipelines:
                pipeline.time_round(args.steps // args.rounds)
        after, _ = matmul_ceiling(dataset.observation_size, hidden, critics)
        profiles = {p.name: profile_matmuls(p, args.profile_steps) for p in pipelines[1:]}

    ceiling = max(before, after)
    seed_steps = statistics.median(pipelines[0].rates)
    print(
        f"{'pipeline':28} {'steps/s':>8} {'vs seed':>8} {'GFLOP/step':>10} "
        f"{'GFLOP/s':>8} {'% ceiling':>9}"
    )
    for pipeline in pipelines:
        rate = statistics.median(pipeline.rates)
        achieved = rate * pipeline.flops / 1e9
        print(
            f"{pipeline.name:28} {rate:8.1f} {rate / seed_steps:7.2f}x "
            f"{pipeline.flops / 1e9:10.3f} {achieved:8.1f} {100 * achieved / ceiling:8.1f}%"
        )
    print(
        f"matmul ceiling: {ceiling:.1f} GFLOP/s (float32 torch.mm/bmm, best shape {shape}; "
        f"{before:.1f} before the pipelines, {after:.1f} after)"
    )
    if min(before, after) < 0.65 * ceiling:  # run-to-run noise here is about +-20%
        print("warning: the ceiling fell by > 35% during the run; the machine was not idle")
    print(
        f"profile ({args.profile_steps} steps each; the profiler slows the small ops):\n"
        f"{'pipeline':28} {'ms/step':>8} {'matmul ms':>9} {'matmul %':>8} "
        f"{'matmul GFLOP/s':>14} {'matmul-only bound':>17}"
    )
    for pipeline in pipelines[1:]:
        matmul_s, step_s = profiles[pipeline.name]
        rate = pipeline.flops / matmul_s / 1e9
        print(
            f"{pipeline.name:28} {1e3 * step_s:8.2f} {1e3 * matmul_s:9.2f} "
            f"{100 * matmul_s / step_s:7.1f}% {rate:14.1f} {100 * rate / ceiling:16.1f}%"
        )
    print(f"action-centric networks vs flat (same algorithm, batch {BATCH}, same rounds):")
    print(f"{'algorithm':10} {'flat ms/step':>12} {'action ms/step':>14} {'ratio':>6}")
    for flat, act in zip(pipelines[1:], action_pipelines, strict=True):
        flat_ms, act_ms = (1e3 / statistics.median(p.rates) for p in (flat, act))
        name = flat.name.removeprefix("poke-tune ")
        print(f"{name:10} {flat_ms:12.2f} {act_ms:14.2f} {act_ms / flat_ms:5.2f}x")
    print(TARGETS)


if __name__ == "__main__":
    main()
