"""Workflows over the API: batches of tilt series on Dask distributed (:mod:`.batch`)."""

from napari_tiltgen.workflows.batch import BatchReport, run_batch

__all__ = ["BatchReport", "run_batch"]
