"""shoal.cluster (placeholder until built)."""
