"""task=eval: its spec (schema, checks) and its runner."""
