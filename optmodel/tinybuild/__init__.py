"""Offline builder of the bundled corpus, tokenizer and seven trained tiny models.

Nothing at run time imports this package. Everything under ``optmodel/assets/`` is produced by this script, deterministically:

1. ``corpus/train.txt`` (~500 KB) and ``corpus/heldout.txt`` (~50 KB): English text written
   by a seeded template grammar (people, animals, places, objects, colours, numbers,
   arithmetic facts, weather, dialogues and short stories). License-clean: nothing is copied
   from anywhere. Paragraphs of 3-6 sentences are separated by blank lines; the held-out
   file uses another seed and the same distribution.
2. ``tokenizer/``: a byte-level BPE (vocab 1024) trained with ``tokenizers`` on train.txt,
   wrapped in ``transformers.PreTrainedTokenizerFast`` (``<|bos|>``, ``<|eos|>``,
   ``<|pad|>``, ``<|unk|>``, chat-role tokens and a minimal chat template).
3. ``tiny_models/<name>/`` for ``tiny_qwen3``, ``tiny_llama``, ``tiny_qwen3_moe``,
   ``tiny_deepseek`` (MLA + MoE), ``tiny_llama4`` (Llama-4 text model) and ``tiny_gpt_oss``
   (configs.py says what each one exercises): ordinary Hugging Face checkpoints (bfloat16 safetensors,
   config.json, generation_config.json, tokenizer files, ``train_info.json``), each trained
   from scratch on train.txt; and ``tiny_qwen3_teacher``, the teacher of the bundled
   distillation pair: tiny_qwen3 at 8 layers, trained on 4 MB of fresh grammar text (seeded,
   never written out), its rows mostly packed as optmodel packs data
   (paragraph<|eos|>...), the teacher of its own depth-pruned student; its ``train_info.json`` records the losses of its first steps,
   which ``models.first_losses`` replays to show the builder still makes it. Every ``nn.Linear`` has ``in_features % 128 == 0`` (ModelOpt's
   INT4 AWQ export needs it); this is asserted before training.

Usage::

    python -m optmodel.tinybuild                      # everything into optmodel/assets
    python -m optmodel.tinybuild --out /tmp/a         # somewhere else
    python -m optmodel.tinybuild --only tiny_llama    # one part (corpus, tokenizer or a model)

A model needs the corpus and tokenizer: ``--only <model>`` builds them first when they are
missing from ``--out``. Training runs in float32 on the CPU with 2 threads and a fixed
number of steps (so the result does not depend on the machine's speed); weights are saved in
bfloat16 and the held-out perplexity is measured on the reloaded bf16 checkpoint in float32.

Time on an idle 2-core CPU: corpus + tokenizer ~3 s, the first four models ~65-80 s of training
each plus a few seconds of evaluation, the Llama-4 / gpt-oss ones 100 steps of 8 x 128
tokens (not timed idle: 33 / 39 minutes on a 2-core machine shared at load ~10, where
tiny_qwen3 ran 20-40x slower than idle); the teacher 800 steps at one thread, 768 s with the
other core mostly busy. Bit-for-bit reproducibility holds on
the same machine / torch build (floating-point kernels may differ across CPUs).
"""
