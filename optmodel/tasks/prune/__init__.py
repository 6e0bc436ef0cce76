"""task=prune: its spec (schema, checks) and its runner."""
