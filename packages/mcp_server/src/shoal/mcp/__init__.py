"""shoal.mcp (placeholder until built)."""
