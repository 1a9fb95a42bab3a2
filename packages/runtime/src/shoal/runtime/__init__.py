"""shoal.runtime (placeholder until built)."""
