"""The safety net: the deterministic fault simulation (its stand-in service and invariants) and the
crash matrix with real processes and SIGKILL."""
