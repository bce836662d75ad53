"""The tuning service: search spec, Optuna search, Ray Tune trainable (Ray and Optuna are
imported only under this package).

Submodules are imported explicitly (`poke_tune.tuning.search`, `...spec`,
`...trainable`) so that reading a spec does not start importing Ray.
"""
