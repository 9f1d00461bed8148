-- The ONNX Runtime library: missing, not ONNX Runtime, too old. Each is a
-- clear ERROR; a corrected path then works in the same session. The library
-- loads once per process, so this runs in local mode (the shared worker's
-- library is tested in tests/python/test_worker.py).
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;
\c
SET inf_ir.inference = local;
SET inf_ir.onnxruntime_library = '/tmp/inf_ir_fixtures/missing.so';
SELECT inf_embed('x');
SET inf_ir.onnxruntime_library = '/tmp/inf_ir_fixtures/libnotort.so';
SELECT inf_embed('x');
SET inf_ir.onnxruntime_library = '/tmp/inf_ir_fixtures/libonnxruntime.so.1.20.1';
SELECT inf_embed('x');
SET inf_ir.onnxruntime_library = '';
SELECT inf_embed('x');
RESET inf_ir.onnxruntime_library;
SELECT array_length(inf_embed('x'), 1) AS recovered_dims;
-- Once loaded, a session cannot switch libraries (the message names the
-- installed path, so only the SQLSTATE is shown here).
SET inf_ir.onnxruntime_library = '/tmp/inf_ir_fixtures/libonnxruntime.so.1.20.1';
\set VERBOSITY sqlstate
SELECT inf_embed('x');
\set VERBOSITY terse
RESET inf_ir.onnxruntime_library;

-- Threads and batch size are per-session settings; results do not depend on them.
-- Batched and single runs pad differently, so compare by cosine, not bit for bit.
CREATE FUNCTION pg_temp.same(a real[], b real[]) RETURNS boolean LANGUAGE sql IMMUTABLE AS
  $$ SELECT sum(x::float8 * y::float8) > 0.99999 FROM unnest(a, b) AS t(x, y) $$;
SET inf_ir.threads = 1;
SET inf_ir.batch_tokens = 256;
SELECT bool_and(pg_temp.same(embedding, inf_embed((ARRAY['one', 'two words', repeat('many words ', 50)])[ord]))) AS same_vectors
FROM inf_embed_many(ARRAY['one', 'two words', repeat('many words ', 50)]);
SET inf_ir.batch_tokens = 10;
RESET inf_ir.batch_tokens;
RESET inf_ir.threads;

-- The CUDA probe never fails: here (no GPU in CI) the CPU, with the reason.
SELECT device, detail ~ 'CUDA|cuBLAS|NVRTC|device' AS says_why FROM inf_cuda_device();

-- Where the shared worker embeds: read when its model host starts, so set
-- in postgresql.conf (or ALTER SYSTEM) and reloaded, not per session.
SHOW inf_ir.embed_device;
SET inf_ir.embed_device = cuda;

-- ONNX Runtime's own CUDA provider, asked for with the CPU-only library
-- set-up installs: the model loads on the CPU and embeds the same.
SELECT inf_embed('same vector') AS before \gset
SET inf_ir.onnxruntime_cuda = on;
SELECT inf_embed('same vector') = :'before'::real[] AS same_on_the_cpu;
RESET inf_ir.onnxruntime_cuda;
