"""task=quantize: its spec (schema, checks) and its runner."""
