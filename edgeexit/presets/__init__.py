"""The shipped TOML presets (targets, calibration budgets and recipes), found with importlib.resources."""
