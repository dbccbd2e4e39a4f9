"""The marks every table and figure of a non-result carries (watermarks, captions), in one place."""

SYNTHETIC_MARK = "SYNTHETIC stand-in: not a result"  # data made up for tests and smoke runs
SMOKE_MARK = "SMOKE run: not a result"  # the smoke profile: a few epochs, a check that everything runs
