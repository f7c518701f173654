"""Build pipeline stages: export, surgery, calibrate, quantize, engines, compare."""
