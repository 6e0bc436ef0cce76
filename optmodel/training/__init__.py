"""The training layer shared by finetune, distill and eagle3: transformers' Trainer (through
ModelOpt's trainers) configured from a `TrainingConfig`, with atomic resumable checkpoints,
preemption saves and metrics to the console, manifest and tracker.

Modules: config (schemas + checks, light), arguments (TrainingArguments), checkpoints
(complete-marker, last checkpoint), callbacks (metrics, preemption), distill (KD losses),
trainers (which ModelOpt trainer), loop (`fit`: one call that trains, resumes and reports).
"""
