"""saolctl.engine."""
