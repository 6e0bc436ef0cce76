"""task=convert: its spec (schema, checks) and its runner."""
