"""One package per task: its spec (spec.py: schema, checks, backends) beside its runner
(run.py: `run(ctx)` that reads top to bottom as the user's workflow). registry.py finds them
and is the only module that loads a task's modules; spec.py holds what every spec is made of."""
