"""Field-bus reads as pure functions: what to read (points), how to batch it (plan), decode."""
