"""Optuna samplers and pruners by name, with validated options."""
