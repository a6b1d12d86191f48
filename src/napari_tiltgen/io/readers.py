"""Readers (work in progress)."""
def read(*a, **k): raise NotImplementedError
def read_tilt_series(*a, **k): raise NotImplementedError
def read_volume(*a, **k): raise NotImplementedError
