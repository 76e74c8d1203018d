"""The REST API's blueprints, one per area (see docs/api.md)."""
