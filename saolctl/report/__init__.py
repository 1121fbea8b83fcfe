"""saolctl.report."""
