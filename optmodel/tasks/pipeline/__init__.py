"""task=pipeline: its spec (schema, checks) and its runner."""
