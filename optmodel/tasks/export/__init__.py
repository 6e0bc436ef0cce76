"""task=export: its spec (schema, checks) and its runner."""
