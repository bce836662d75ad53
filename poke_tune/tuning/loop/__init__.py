"""The data flywheel (`poke-tune iterate`): round after round, the champion plays new
battles that join the data, and the sweep runs again on the grown dataset.

Round 0 is the spec's sweep, named `NAME-r0`. Round k (k >= 1) has three stages:
1. generating: `rounds.battles` new battles between round k-1's champion, pinned
   (`models:/MODEL/VERSION:softmax=T` for each temperature; its checkpoint file when MLflow
   is off), and the pool (`rounds.opponents`, earlier champions), made once and cached by
   their recipe (`datasets.prepare_dataset`), then combined with the earlier rounds'
   data (`rounds.window`), cached too (`plan.generation_recipe`, `plan.round_parts`);
2. sweeping: the spec's sweep on that data as `NAME-rk`, warm-started from round k-1's
   best hyperparameters. Every round registers under one model (`plan.model_name`), so
   the confirmation replays the registered champion and promotion must beat it;
3. measuring: the round's winner plays the curve battles (`rounds.curve_battles`, the same
   seeded battles every round: paired) against `rounds.curve_opponents`, the reference
   and the previous champion. The loop's champion is the registry's verdict (MLflow on),
   else the winner if it beats the previous champion against the reference on the curve;
   the stop rule (`rounds.min_gain`) reads the champion's gain there.
Round 0 has stages 2 and 3.

The loop folder `storage_path/NAME` holds the rounds' sweep folders, the loop's spec, its
record (`records.LoopRecord`, rewritten atomically after every stage) and its report
(`report/`, after every round; on MLflow too: a parent run for the loop, a child run per
round tagged with its sweep, `track/loop_runs.py`). `resume_iterate` continues at the
round and stage the record names: a sweep cut off mid-search is resumed (`resume_sweep`),
a finished one is not re-run, and data already generated is found in the cache. One
process works on a loop at a time.

- `run.py`: `run_iterate`, `resume_iterate` and the turn over rounds;
- `stages.py`: generating, sweeping, measuring, and `LoopHooks` (what the caller hands in);
- `folder.py`: `Loop`, the loop folder (spec, record, lock, report folder);
- `report.py`: the loop table, `rounds.csv` and `curve.png`;
- `plan.py`: `LoopSettings` (the spec checked once) and the pure plan of each round.

Nothing is imported here, so `import poke_tune.tuning.loop` does not load Ray.
"""
