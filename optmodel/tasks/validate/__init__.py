"""task=validate: its spec (schema, checks) and its runner."""
