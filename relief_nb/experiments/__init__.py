"""The iterative prune-retrain experiment: configuration and its validation (:mod:`.config`), presets and
profiles (:mod:`.presets`), training (:mod:`.training`), the run with its folder, checkpoints and results files
(:mod:`.run` and its parts), and the CPU-independent fingerprint the notebooks check (:mod:`.fingerprint`).

May import: :mod:`relief_nb.pruning` and everything below it.
"""
