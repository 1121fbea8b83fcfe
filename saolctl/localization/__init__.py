"""saolctl.localization."""
