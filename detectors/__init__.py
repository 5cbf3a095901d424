"""Online anomaly detectors: pure code that turns window records into scores and alerts."""
