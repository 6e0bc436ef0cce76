"""task=distill: its spec (schema, checks) and its runner."""
