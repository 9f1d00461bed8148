#!/usr/bin/env bash
# Everything a GPU session runs, in one command on the device machine,
# after benches/gpu/run_search.sh --build and benches/gpu/run_embed.sh
# --prepare here (target/gpu, about 58 MB, is what travels: carry it).
# Embedding first (about 2 minutes), then search at 1M and 10M rows.
# Results: $OUT/embed and $OUT/search (JSON and logs).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:?set OUT to the folder that comes back}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
failed=0
OUT=$OUT/embed STEP_TIMEOUT=${EMBED_TIMEOUT:-180} "$ROOT/benches/gpu/run_embed.sh" || failed=1
OUT=$OUT/search STEP_TIMEOUT=${SEARCH_TIMEOUT:-200} "$ROOT/benches/gpu/run_search.sh" || failed=1
exit $failed
