"""shoal.state (placeholder until built)."""
