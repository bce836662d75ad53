"""The tuning service (the only user of Ray, Optuna and MLflow).

The spine is the sweep's life cycle (`sweep.py`, `submit.py`) over what every stage
shares (`experiment.py`, `datasets.py`, `records.py`, `spec.py`, `spec_file.py`,
`locations.py`, `redaction.py`, `secrets.py`); the stages live in `search/` (1),
`confirm/` (2, 3) and `track/` (4, the only MLflow writer); the data flywheel, rounds of
sweeps on growing data, in `loop/`. Submodules are imported explicitly, so reading a spec
does not load Ray.
"""
