"""Physics: parallel-beam geometry, projector (forward + adjoint), noise/dose model."""
