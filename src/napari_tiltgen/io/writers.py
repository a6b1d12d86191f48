"""Writers (work in progress)."""
def write_mrc(*a, **k): raise NotImplementedError
def write_tiff(*a, **k): raise NotImplementedError
