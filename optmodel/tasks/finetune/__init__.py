"""task=finetune: its spec (schema, checks) and its runner."""
