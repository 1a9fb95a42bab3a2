"""shoal.core (placeholder until built)."""
