"""Gate checks: pure functions of (evidence, thresholds) -> GateResult.
The operator and the local runner call the same functions."""
