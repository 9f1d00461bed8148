-- statement_timeout during a large array call is honoured promptly, and the
-- session goes on.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;
SELECT array_length(inf_embed('warm up'), 1) AS dims;
SET inf_ir.threads = 1;
SET statement_timeout = '700ms';
CREATE TEMP TABLE timing(started timestamptz);
INSERT INTO timing VALUES (clock_timestamp());
SELECT count(*) FROM inf_embed_many(array(SELECT repeat('passage text ', 120) || i FROM generate_series(1, 2000) i));
RESET statement_timeout;
-- 0.7 s of timeout plus at most about one second to stop.
SELECT clock_timestamp() - started < interval '1.7 seconds' AS stopped_promptly FROM timing;
SELECT array_length(inf_embed('after cancel'), 1) AS dims_after;
