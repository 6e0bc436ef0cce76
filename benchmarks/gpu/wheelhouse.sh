#!/usr/bin/env bash
# The wheels the GPU machine lacks, for CPython 3.12 / x86-64, in .wheelhouse/ (git-ignored),
# and the size of what the device call would carry: the tree plus the wheelhouse (64 MiB limit).
#
#   PYTHON=.venv/bin/python benchmarks/gpu/wheelhouse.sh [KINDS.md]
#
# PYTHON: an environment with optmodel's dependencies installed (the resolver reads their
# metadata); pip there downloads. KINDS.md (the device tool's): refresh the device package
# list first. Needs PyPI; the device machine has no network, so this runs here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WHEELHOUSE=${WHEELHOUSE:-.wheelhouse}
LIMIT_MIB=64
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$WHEELHOUSE"
rm -f "$WHEELHOUSE"/*.whl
"$PYTHON" benchmarks/gpu/missing.py ${1:+--kinds-md "$1"} > "$WHEELHOUSE/requirements.txt"
echo "carrying $(wc -l < "$WHEELHOUSE/requirements.txt") packages the device lacks (list: $WHEELHOUSE/requirements.txt)"

sdist_only=()
while read -r req; do
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
         "${PLATFORMS[@]}" -d "$WHEELHOUSE" "$req" 2>/dev/null; then
    sdist_only+=("$req")
  fi
done < "$WHEELHOUSE/requirements.txt"

# Published as source only (antlr4-python3-runtime 4.9.3, rouge-score, sqlitedict, word2number):
# build the wheel here; each must come out pure Python (py3-none-any) to install on the device.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
for req in "${sdist_only[@]}"; do
  echo "building $req from its source distribution"
  "$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$build" "$req"
done
for whl in "$build"/*.whl; do
  [ -e "$whl" ] || continue
  case "$whl" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$whl" "$WHEELHOUSE/" ;;
    *) echo "error: $(basename "$whl") is not pure Python; it would not install on the device" >&2; exit 1 ;;
  esac
done

# PuLP (imported by ModelOpt's searcher) ships its CBC solver for six platforms, 15.6 MiB:
# keep the x86-64 Linux one, the device's, and drop the rest from the files and the RECORD.
"$PYTHON" - "$WHEELHOUSE"/pulp-*.whl <<'EOF'
import os, sys, zipfile
path = sys.argv[1]
drop = lambda n: n.startswith("pulp/solverdir/cbc/") and not n.startswith("pulp/solverdir/cbc/linux/i64/")
with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if drop(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if not drop(l.decode().split(",")[0]))
        dst.writestr(info, data)
os.replace(path + ".tmp", path)
EOF

# One wheel per requirement, no more: two versions of one package stop the device's install.
wanted=$(wc -l < "$WHEELHOUSE/requirements.txt")
got=$(ls "$WHEELHOUSE"/*.whl | wc -l)
[ "$wanted" = "$got" ] || { echo "error: $got wheels for $wanted requirements" >&2; exit 1; }

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
wheels=$(cat "$WHEELHOUSE"/*.whl | wc -c)
# What the device tool sends: tracked files, untracked files git does not ignore, and the carry.
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 cat 2>/dev/null | wc -c)
carry=$(find "$WHEELHOUSE" -type f -print0 | xargs -0 cat | wc -c)
total=$((tree + carry))
echo "wheelhouse   $(mib "$wheels") MiB in $got wheels ($WHEELHOUSE)"
echo "tree         $(mib "$tree") MiB (git ls-files + untracked, not ignored)"
echo "travels      $(mib "$total") MiB of the device call's $LIMIT_MIB MiB (tree + carry $WHEELHOUSE)"
ls -S "$WHEELHOUSE"/*.whl | head -5 | while read -r w; do echo "  largest     $(mib "$(wc -c < "$w")") MiB $(basename "$w")"; done
[ "$total" -lt $((LIMIT_MIB * 1048576)) ] || { echo "error: over the $LIMIT_MIB MiB the device call carries" >&2; exit 1; }
