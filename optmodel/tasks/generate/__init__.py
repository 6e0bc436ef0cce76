"""task=generate: its spec (schema, checks) and its runner."""
