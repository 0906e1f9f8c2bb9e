"""Commands: filled in by its owner."""
