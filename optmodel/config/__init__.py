"""Config schemas, resolution and validation of a composed run config. Imports only
optmodel.facts (and itself): a task's spec reaches this code as an argument."""
