"""task=mmlu: its spec (schema, checks) and its runner."""
