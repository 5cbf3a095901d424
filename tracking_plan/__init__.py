"""The tracking plan as code: format, loading, validation, normalisation, lint and diff."""
