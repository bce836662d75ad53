"""Stage 4 and the record of the sweep in MLflow (the only MLflow user).

- `tracker.py`: the `Tracker` seam the life cycle calls (`NullTracker` when MLflow is off);
- `store.py`: the MLflow store, run tags, the Outbox of writes kept back by an outage;
- `registry.py`: promote: register the winner once, move `champion` only if earned;
- `policy_model.py`: the pyfunc model from code that a registered champion loads as;
- `tracking.py`: `MLflowTracker`: live logging as a Tune callback, promotion, report upload;
- `loop_runs.py`: the data flywheel's runs (a parent for the loop, a child per round);
- `ui.py`: the MLflow UI on a sweep's store.
"""
