"""task=eagle3_features: its spec (schema, checks) and its runner."""
