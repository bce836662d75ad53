"""Stages 2 and 3, confirm and report: the shortlist plays fresh battles beside the
baselines, and the tables, charts and verdict are written to the experiment folder.

- `contenders.py`: who plays (shortlist, behaviour policies, BC, the champion);
- `confirm.py`: the race on the confirmation battles, paired differences, the winner;
- `budget.py`: expected best against the number of trials;
- `charts.py`: the report's charts and Optuna's plots;
- `report.py`: the report folder and the one-line verdict.

Nothing here imports MLflow or the search: a `Confirmation` is built from `TrialRow`s.
"""
