"""Shared state of the roles: config DB, history DB, live state on /run."""
