"""The shoal command."""


def main() -> None:
    """Run the shoal command."""
    raise SystemExit("not yet built")
