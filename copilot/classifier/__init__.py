"""Multi-label classifier over the taxonomy: data, training, calibration, inference."""
