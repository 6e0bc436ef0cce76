"""Entry point of the two-rank task=distill runs on backend=megatron (CPU gloo).

One spawn of two processes runs each scenario through optmodel.run.execute (the task as a
user runs it), then loads the run's saved model back with run.load at the same layout and
scores the held-out text with it. A scenario naming an earlier run dir resumes a copy of it
left as a kill during its last checkpoint write leaves it (run.resume=true). Rank 0 writes the figures to a JSON file the test reads.
"""

from __future__ import annotations

import json

from megatron_task_workers import join_gloo_world, recorded_results


def student_checkpoint(out_dir: str) -> str:
    """The bundled tiny Qwen3 with its two middle layers dropped (4 -> 2), as a HF checkpoint."""
    from training_workers import drop_decoder_layer, tiny_models

    _, student, tok = tiny_models(drop_layer=2)
    drop_decoder_layer(student, 1)
    student.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def interrupted_copy(finished: str, run_dir: str) -> None:
    """`finished`'s run dir as a run killed while writing its last checkpoint leaves it: the
    newest checkpoint without its completion marker, no saved model, status failed."""
    import shutil
    from pathlib import Path

    from optmodel.facts.rundir import MANIFEST_NAME
    from optmodel.training.checkpoints import COMPLETE_MARKER, checkpoints

    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns(".optmodel.lock", "model"))
    (checkpoints(Path(run_dir) / "checkpoints")[-1] / COMPLETE_MARKER).unlink()
    manifest = Path(run_dir) / MANIFEST_NAME
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "failed"}))


def run_scenarios(rank: int, world: int, port: int, scenarios: list, common: list, out_path: str) -> None:
    join_gloo_world(rank, world, port)
    import torch

    from conftest import compose_cfg
    from optmodel.backends import load
    from optmodel.data.text import dataset_texts, pack
    from optmodel.evaluation.perplexity import handle_perplexity
    from optmodel.facts.rundir import read_manifest
    from optmodel.run import execute

    with recorded_results(rank, out_path) as results:
        for name, overrides, run_dir, resume_of in scenarios:
            if resume_of:  # continue a copy of an earlier scenario's run, as if killed while saving
                if rank == 0:
                    interrupted_copy(resume_of, run_dir)
                torch.distributed.barrier()
                overrides = [*overrides, "run.resume=true", f"run.output_dir={run_dir}"]
            cfg = compose_cfg(*common, *overrides)
            metrics = execute(cfg, run_dir)
            torch.distributed.barrier()
            # the saved student, restored by a later run at the same layout
            later = compose_cfg(*common, *overrides, f"run.load={run_dir}")
            from optmodel.config.inherit import inherit_run_model

            handle = load(inherit_run_model(later))
            heldout = pack(handle.tokenizer, dataset_texts(cfg.data, "eval"), cfg.data.seq_len,
                           cfg.data.eval_max_sequences, "data.eval_path")
            reloaded = handle_perplexity(handle, heldout, cfg.data.batch_size, "perplexity reloaded")
            manifest = read_manifest(run_dir) if rank == 0 else {}
            results[name] = {"metrics": metrics, "reloaded_perplexity": reloaded,
                             "history": (manifest.get("training") or {}).get("history"),
                             "layers": handle.architecture().get("num_layers")}
            del handle


def spawn(scenarios: list, common: list, out_path: str, world: int = 2) -> dict:
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    mp.spawn(run_scenarios, args=(world, free_port(), scenarios, common, out_path), nprocs=world, join=True)
    with open(out_path) as f:
        return json.load(f)
