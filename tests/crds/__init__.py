"""CRDs of the project's own for tests (see rayjob_minimal.py)."""
