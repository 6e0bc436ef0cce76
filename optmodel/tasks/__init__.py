"""One module per task, each with `run(ctx) -> metrics` that reads top to bottom as the
user's workflow. Tasks are registered in optmodel/config/tasks/ (schema, checks, backends)."""
