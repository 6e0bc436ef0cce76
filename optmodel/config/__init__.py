"""Config schemas and validation."""
