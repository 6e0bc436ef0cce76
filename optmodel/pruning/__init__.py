"""Minitron-style structured pruning of Hugging Face causal LMs (backend=hf) and of
megatron-core models (ModelOpt's own `mcore_minitron`, backend=megatron).

- targets:    export_config / target_params -> the pruned shape, and its validation (no torch)
- importance: activation importance from ModelOpt's importance hooks over calibration batches
- depth:      layer importance (cosine distance a block makes to the hidden state, or skip loss)
- slicing:    module surgery that keeps a valid transformers model and config
- scores:     the scores file in the run dir, and its reuse (task.scores)
- pruners:    one pruner per backend behind the same calls (task=prune)
- minitron:   backend=megatron: mcore_minitron on the handle's GPTModel, its scores cache
"""
