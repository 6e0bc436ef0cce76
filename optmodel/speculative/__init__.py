"""EAGLE3 speculative decoding on top of ModelOpt (`modelopt.torch.speculative`).

convert (draft spec -> `mtsp.convert` config), vocab (draft vocabulary d2t / t2d from token
frequencies), data (conversations -> fixed-length token rows), features (sharded, resumable
hidden-state dump for offline training), ops (each backend's EAGLE3 steps; the draft trains on
the shared training stack, optmodel.training), acceptance
(acceptance length through ModelOpt's `pseudo_speculative_generate`), draft (export with
`export_speculative_decoding` and reload of an exported draft onto its target), serving (each
engine's conventions: aux ids, tensor names, rope; `task.deploy`), checkpoint (training
checkpoints of the draft only, the target checked on resume), workflow (online / offline
training end to end, what task=eagle3 runs).
"""
