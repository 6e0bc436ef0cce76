#!/usr/bin/env bash
# The GPU check in one command: install the carried wheelhouse beside the device's CUDA torch,
# then run benchmarks/gpu/check.py (every GPU-only path, per-step timeouts), all logged to $OUT.
#
#   benchmarks/gpu/check.sh                    # on the device (the `run` call in README's "GPU check")
#   benchmarks/gpu/check.sh --cpu-rehearsal    # here: the same steps on CPU, CUDA-only ones skipped
#   benchmarks/gpu/check.sh --cpu-rehearsal --fast   # what CI runs (tests/test_gpu_check.py)
#   benchmarks/gpu/check.sh --only quantize_fp8,loglikelihood   # rerun some steps
#
# $OUT gets summary.json, check.log (this output) and logs.tar.gz (one log per step, the
# probe records, the gpu tests' junit XML): three files, inside the device tool's return limits.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d /tmp/gpucheck.XXXXXX)}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
PYTHON=${PYTHON:-python3}
SITE=${GPUCHECK_SITE:-/tmp/optmodel_site}
rehearsal=false
for arg in "$@"; do [ "$arg" = --cpu-rehearsal ] && rehearsal=true; done
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/optmodel_torch_ext} MAX_JOBS=${MAX_JOBS:-16}

if $rehearsal; then
  # This machine's environment already holds everything; the wheels (CPython 3.12) are only
  # unpacked for the device's platform, which proves they form one installable set.
  if [ -d .wheelhouse ] && ! printf '%s\n' "$@" | grep -q -- --fast; then
    echo "[gpucheck] install rehearsal: unpacking .wheelhouse for CPython 3.12 / x86-64 into $SITE"
    rm -rf "$SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
      --python-version 3.12 --implementation cp --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      .wheelhouse/*.whl || { echo "[gpucheck] the wheelhouse does not install"; exit 1; }
    echo "[gpucheck] unpacked $(ls "$SITE" | grep -c dist-info) packages, $(du -sm "$SITE" | cut -f1) MiB"
    rm -rf "$SITE"
  fi
else
  [ -d .wheelhouse ] || { echo "[gpucheck] no .wheelhouse: run benchmarks/gpu/wheelhouse.sh here and carry it"; exit 1; }
  echo "[gpucheck] installing $(ls .wheelhouse/*.whl | wc -l) wheels into $SITE (the device's torch stays)"
  start=$(date +%s)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .wheelhouse/*.whl || { echo "[gpucheck] pip install of the wheelhouse failed"; exit 1; }
  echo "[gpucheck] installed in $(( $(date +%s) - start )) s"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if [ -e "$SITE/torch" ]; then echo "[gpucheck] a carried wheel brought torch: the device's CUDA torch would be shadowed"; exit 1; fi
fi

"$PYTHON" benchmarks/gpu/check.py --out "$OUT" "$@"
status=$?
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
echo "[gpucheck] results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
