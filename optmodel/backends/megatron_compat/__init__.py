"""Adaptations ModelOpt's Megatron plugins (Minitron pruning, EAGLE) need on megatron-core's
local (non-Transformer-Engine) layer spec: CPU with gloo, and GPUs without TE.

Where Transformer-Engine is installed nothing here changes anything: the plugins are
imported as shipped and run on the TE spec. Each adaptation names the ModelOpt /
megatron-core version it answers (ModelOpt 0.46.1 / 0.47.0, megatron-core 0.16.1 / 0.19.2;
optmodel/facts/library_sets.py says which set runs);
tests/test_megatron_compat*.py hold, for each, a test that fails once the library does it
itself (then the adaptation can go). Nothing here makes any other code believe TE is
installed: every replacement is scoped to an import or a `with` block and undone after it.
"""

from optmodel.backends.megatron_compat.eagle import eagle_on_local_spec
from optmodel.backends.megatron_compat.minitron import minitron, minitron_collectives

__all__ = ["eagle_on_local_spec", "minitron", "minitron_collectives"]
