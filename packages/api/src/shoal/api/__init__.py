"""shoal.api (placeholder until built)."""
