"""The reference fleet receiver: stores heartbeats, lists units, sends requests back."""
