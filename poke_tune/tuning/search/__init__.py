"""Stage 1, search: Optuna proposes, Ray Tune runs one training per trial, on the dataset
the life cycle compiled first (`tuning/datasets.py`).

- `trainable.py`: the function trainable (one training run, scored on the selection battles);
- `tuner.py`: the Tuner (search space, sampler, scheduler, trainable with its resources);
- `cluster.py`: the Ray it runs on (start or join, check, fit);
- `search.py`: fit the Tuner and read one `TrialRow` per trial back.

Nothing is imported here, so `import poke_tune.tuning.search` does not load Ray.
"""
