"""Calibration prompts and INT8 calibration: capture, entropy scales, precision plans."""
