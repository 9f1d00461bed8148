#!/usr/bin/env bash
# The test command: set-up (idempotent), Rust unit tests, then the SQL suites
# (pg_regress) and the Python reference checks against a throwaway PostgreSQL.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/fixtures.sh"
TEST_PORT=${INF_IR_TEST_PORT:-5434}
TEST_CLUSTER=$INF_IR_HOME/test-cluster

"$PROJECT_ROOT/scripts/setup.sh"
cd "$PROJECT_ROOT"

step "Rust unit tests (pure modules, real model where installed)"
# One run, its whole output kept: a failure shows here in full, not only its summary.
CARGO_TEST_LOG=$(mktemp)
if INF_IR_HOME=$INF_IR_HOME cargo test --lib --tests -q >"$CARGO_TEST_LOG" 2>&1; then
  grep -E '^(test result|running)' "$CARGO_TEST_LOG" || true
else
  grep -vE '^\s+(Compiling|Building|Checking)' "$CARGO_TEST_LOG" | tail -150
  die "cargo test failed (full output: $CARGO_TEST_LOG)"
fi

step "Export check: ONNX graph vs float64 numpy forward pass"
"$VENV/bin/python" scripts/check_onnx_export.py "$MODEL_DIR"

step "Throwaway PostgreSQL on 127.0.0.1:$TEST_PORT"
stop_cluster "$TEST_CLUSTER"
rm -rf "$TEST_CLUSTER"
make_fixtures
start_cluster "$TEST_CLUSTER" "$TEST_PORT"
# The suites keep both cores busy with clients on purpose (searches during a
# model switch, writers during a backfill): at the default 10 s each
# background piece would wait that long. The giving way itself is tested in
# tests/worker_host.rs.
echo "inf_ir.background_yield = 250ms" >> "$TEST_CLUSTER/postgresql.conf"
trap 'stop_cluster "$TEST_CLUSTER"; stop_llm_server' EXIT

run_pg_regress() {
  local out
  out=$(mktemp -d)
  chmod 777 "$out"
  local tests
  tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | tr '\n' ' ')
  if ! env -u RUST_BACKTRACE "$PG_BIN/../lib/pgxs/src/test/regress/pg_regress" \
       --inputdir=tests/pg_regress --outputdir="$out" --bindir="$PG_BIN" \
       --host=127.0.0.1 --port="$TEST_PORT" --user=postgres --dbname=inf_ir_regress $tests; then
    cat "$out/regression.diffs" 2>/dev/null | head -100
    die "pg_regress failed (diffs: $out/regression.diffs)"
  fi
}
LOCAL_VECTORS=$(mktemp)

# embedding_suites local|worker: the SQL suites, the Python reference, the
# mode checks and cancel, in one inference mode. The local run writes the
# vectors that the worker run must reproduce bit for bit.
embedding_suites() {
  local mode=$1 label
  label="$(tr '[:lower:]' '[:upper:]' <<< "${mode:0:1}")${mode:1} mode"
  step "$label: pg_regress (tests/pg_regress)"
  run_pg_regress
  step "$label: embeddings vs the independent Python onnxruntime reference"
  "$VENV/bin/python" tests/python/test_embedding_parity.py --port "$TEST_PORT" --model-dir "$MODEL_DIR"
  step "$label: mode checks$([ "$mode" = worker ] && echo ', identical vectors, batching, SIGKILL, cancel while queued')"
  "$VENV/bin/python" tests/python/test_worker.py --port "$TEST_PORT" --phase "$mode" --vectors "$LOCAL_VECTORS"
  step "$label: cancel from another session (pg_cancel_backend)$([ "$mode" = local ] && echo ', statement_timeout in an index build')"
  "$VENV/bin/python" tests/python/test_cancel.py --port "$TEST_PORT" $([ "$mode" = local ] && echo --index-build)
}

embedding_suites local   # inf_ir not preloaded: each session loads its model

step "Restart with shared_preload_libraries = 'inf_ir': the shared worker embeds from here on"
set_preload "$TEST_CLUSTER" yes
embedding_suites worker

step "Worker mode: inf_search under concurrent inserts, updates, deletes and VACUUM"
"$VENV/bin/python" tests/python/test_search_concurrency.py --port "$TEST_PORT" --seconds 20

step "Worker mode: inf_ir.search_device without a GPU: the CPU index, with the reason"
"$VENV/bin/python" tests/python/test_device_search.py --port "$TEST_PORT" --expect cpu

step "Worker mode: a corpus that follows a table: backfill, burst, metadata vs text updates, search under writes, a model switch under searches, the embedder's indexes, kill -9 of the embedder and of the postmaster"
"$VENV/bin/python" tests/python/test_source_corpus.py --port "$TEST_PORT" --rows 2000 --seconds 20 \
  --pgdata "$TEST_CLUSTER" --pg-bin "$PG_BIN" --switch-model "$SMOLLM_DIR"

# The host's search copies in its float16 emulation (no GPU here): the same
# load, write-following, re-score and fall-back code as on a device.
EMULATED_MEMORY=3000000
step "Worker mode, INF_IR_GPU_EMULATION=1: search from the host's copy under writes and VACUUM, SIGKILL, REINDEX, a corpus too large"
(export INF_IR_GPU_EMULATION=1 INF_IR_GPU_EMULATION_MEMORY=$EMULATED_MEMORY; set_preload "$TEST_CLUSTER" yes)
"$VENV/bin/python" tests/python/test_search_concurrency.py --port "$TEST_PORT" --seconds 10 --search-device cuda
"$VENV/bin/python" tests/python/test_device_search.py --port "$TEST_PORT" --expect emulated \
  --device-memory $EMULATED_MEMORY
set_preload "$TEST_CLUSTER" yes  # restarts without the emulation

step "Worker mode: the index after SIGKILL of every server process mid-insert, and on a streaming standby"
"$VENV/bin/python" tests/python/test_index_crash.py --port "$TEST_PORT" --cluster "$TEST_CLUSTER" \
  --pg-bin "$PG_BIN" --standby-port $((TEST_PORT + 10))

step "Worker mode: retrieval figures vs ../shared/REFERENCE.md (SciFact search, DL19 re-rank)"
"$VENV/bin/python" tests/python/eval_retrieval.py --port "$TEST_PORT" --data "$PROJECT_ROOT/../shared/data"

step "Worker mode: dataset: msmarco-sample import, JSONL round trip, metrics vs an independent implementation"
"$VENV/bin/python" tests/python/test_dataset.py --port "$TEST_PORT" --data "$PROJECT_ROOT/../shared/data"

step "Worker mode: corpora sharded with PL/Proxy over 2 and 4 local servers (SciFact, DL19 re-rank, failures, a standby) vs one server"
"$VENV/bin/python" tests/python/test_sharding.py --port "$TEST_PORT" --pg-bin "$PG_BIN" --home "$INF_IR_HOME" \
  --data "$PROJECT_ROOT/../shared/data" --decoder-dir "$SMOLLM_DIR"

step "Worker mode: a decoder embedder (SmolLM2-135M from its GGUF, exported at set-up): registration, parity with ONNX Runtime, llama.cpp and a float64 forward pass, search"
# --float-ref 40: the float64 numpy pass takes about 1.5 s a text here; all 200 ran by hand (README).
"$VENV/bin/python" tests/python/test_decoder.py --port "$TEST_PORT" --model-dir "$SMOLLM_DIR" --int8-dir "$SMOLLM_INT8_DIR" \
  --gguf "$SMOLLM_GGUF" --llama-python "$LLM_VENV/bin/python" --float-ref 40 --data "$PROJECT_ROOT/../shared/data"

step "LLM endpoints: the real local model (Gemma 3 270M via llama-cpp-python) and a fault-injecting endpoint"
LLM_PORT=${INF_IR_TEST_LLM_PORT:-8434}
start_llm_server "$LLM_PORT"
"$VENV/bin/python" tests/python/test_llm.py --port "$TEST_PORT" --llm-url "http://127.0.0.1:$LLM_PORT/v1" \
  --server-log "$TEST_CLUSTER/server.log" --key-dir "$INF_IR_HOME"
step "LLM re-ranking: inf_rerank_llm and inf_search_reranked against a fault-injecting endpoint (logprobs, graded, listwise, cache, failures, cancel) and the real local models"
qwen_args=()
if [ -f "$QWEN_MODEL_FILE" ]; then
  QWEN_PORT=${INF_IR_TEST_QWEN_PORT:-8435}
  start_llm_server "$QWEN_PORT" qwen
  qwen_args=(--qwen-url "http://127.0.0.1:$QWEN_PORT/v1")
fi
"$VENV/bin/python" tests/python/test_rerank.py --port "$TEST_PORT" --llm-url "http://127.0.0.1:$LLM_PORT/v1" \
  --key-dir "$INF_IR_HOME" "${qwen_args[@]}"
if [ -n "${QWEN_PORT:-}" ]; then stop_llm_server "$QWEN_PORT"; fi
step "LLM stages: CALL inf_synthesize (faults, kill -9, cancel, parallel runs, Batch API) and 20 msmarco-sample pairs through the real model"
"$VENV/bin/python" tests/python/test_llm_stages.py --port "$TEST_PORT" --llm-url "http://127.0.0.1:$LLM_PORT/v1" \
  --key-dir "$INF_IR_HOME" --data "$PROJECT_ROOT/../shared/data" --server-log "$TEST_CLUSTER/server.log"
stop_llm_server

step "All tests passed"
