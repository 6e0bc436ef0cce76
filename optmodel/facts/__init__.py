"""Plain facts every layer may read: errors, paths, layouts, machine and dtype facts, choices,
model-family config mapping, checkpoint and run-dir file checks. Imports nothing else of
optmodel and no heavy library at import."""
