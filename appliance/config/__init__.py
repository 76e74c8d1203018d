"""The configuration document: models, loading, services, overlap checks and diffs."""
