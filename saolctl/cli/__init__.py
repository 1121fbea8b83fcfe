"""saolctl.cli."""
