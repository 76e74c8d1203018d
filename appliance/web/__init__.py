"""The web role: local UI and REST API over HTTPS."""
