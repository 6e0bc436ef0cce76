"""task=eagle3: its spec (schema, checks) and its runner."""
