-- LLM endpoints and prompts: who may change them, what is stored (never a
-- key), the default prompts, and the errors inf_llm_chat gives before it
-- sends anything. (Requests themselves: tests/python/test_llm.py.)
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;

-- A superuser adds and changes an endpoint; the key is named, never stored.
SELECT inf_set_endpoint('local', 'http://127.0.0.1:9/v1/', 'gemma3-270m', api_key_env => 'INF_IR_REGRESS_NO_SUCH_VAR',
                        reply_format => 'json_object', max_concurrency => 2, requests_per_minute => 60);
SELECT name, base_url, model, api_key_env, api_key_file, reply_format, max_concurrency, requests_per_minute,
       timeout_ms, max_output_tokens, temperature, max_attempts FROM inf_ir.llm_endpoints;
SELECT inf_set_endpoint('local', 'http://127.0.0.1:9/v1', 'gemma3-270m', max_concurrency => 8);
SELECT name, api_key_env, max_concurrency, requests_per_minute FROM inf_ir.llm_endpoints;
-- Bad values are refused by the table's checks.
SELECT inf_set_endpoint('Bad Name', 'http://x', 'm');
SELECT inf_set_endpoint('x', 'ftp://x', 'm');
SELECT inf_set_endpoint('x', 'http://x', 'm', reply_format => 'xml');
SELECT inf_set_endpoint('x', 'http://x', 'm', api_key_env => 'A', api_key_file => '/k');
SELECT inf_set_endpoint('x', 'http://x', 'm', max_concurrency => 0);
SELECT inf_set_endpoint('x', 'http://x', 'm', api_key_file => 'relative/path');
SELECT inf_set_endpoint('x', 'http://x', 'm', max_attempts => 0);
-- Credentials in the URL: refused (every role reads the table), without repeating them.
SELECT inf_set_endpoint('x', 'http://user:s3cret@127.0.0.1:9/v1', 'm');
SELECT inf_set_endpoint('x', 'https://tok3n@api.example/v1', 'm');
INSERT INTO inf_ir.llm_endpoints(name, base_url, model) VALUES ('x', 'http://u:p@h/v1', 'm');

-- The default prompts, one per stage, each with a reply schema.
SELECT stage, version, reply_schema->'required' AS required FROM inf_ir.llm_prompts ORDER BY stage, version;
-- A reply schema is checked when it is stored: a keyword inf_ir would ignore,
-- or one of the wrong shape, is refused.
INSERT INTO inf_ir.llm_prompts(stage, version, template, reply_schema)
VALUES ('instruction', 90, '{{query}}', '{"type": "object", "required": "instruction"}');
INSERT INTO inf_ir.llm_prompts(stage, version, template, reply_schema)
VALUES ('instruction', 90, '{{query}}', '{"type": "object", "properties": {"instruction": {"type": "string", "pattern": "^Only"}}}');
INSERT INTO inf_ir.llm_prompts(stage, version, template, reply_schema)
VALUES ('instruction', 90, '{{query}}', '{"type": "object", "required": ["instruction"], "title": "ok"}');
UPDATE inf_ir.llm_prompts SET reply_schema = '{"type": "objekt"}' WHERE stage = 'instruction' AND version = 90;
DELETE FROM inf_ir.llm_prompts WHERE version = 90;

-- Errors before anything is sent.
SELECT inf_llm_chat('nowhere', 'instruction', '{"query": "q", "passage": "p"}');
SELECT inf_llm_chat('local', 'summary', '{"query": "q"}');
SELECT inf_llm_chat('local', 'instruction', '{"query": "q"}', 7);
SELECT inf_llm_chat('local', 'instruction', '{"query": "q"}');
SELECT inf_llm_chat('local', 'instruction', '["q"]');
SELECT inf_llm_chat('local', 'instruction', '{"query": 5, "passage": "p"}');
SELECT count(*) FROM inf_llm_batch('local', 'instruction', ARRAY[]::jsonb[]);
-- NULLs.
SELECT inf_llm_chat(NULL, 'instruction', '{}');
SELECT inf_llm_chat('local', NULL, '{}');
SELECT inf_llm_chat('local', 'instruction', NULL);
SELECT * FROM inf_llm_batch('local', 'instruction', NULL);
SELECT * FROM inf_llm_batch('local', 'instruction', ARRAY['{"query": "q", "passage": "p"}', NULL]::jsonb[]);
SELECT inf_set_endpoint(NULL, 'http://x', 'm');
SELECT inf_drop_endpoint(NULL);
SELECT * FROM inf_llm_batch('local', 'instruction', ARRAY['{"query": "q", "passage": "p"}', '{"query": 1}']::jsonb[]);
SELECT inf_set_endpoint('keyed', 'http://127.0.0.1:9/v1', 'm', api_key_env => 'INF_IR_REGRESS_NO_SUCH_VAR');
SELECT inf_llm_chat('keyed', 'instruction', '{"query": "q", "passage": "p"}');
SELECT inf_set_endpoint('keyfile', 'http://127.0.0.1:9/v1', 'm', api_key_file => '/nonexistent/inf_ir.key');
SELECT inf_llm_chat('keyfile', 'instruction', '{"query": "q", "passage": "p"}');

-- Stage runs (CALL inf_synthesize): errors before anything is sent.
CALL inf_synthesize(NULL, 'local');
CALL inf_synthesize('summary', 'local');
CALL inf_synthesize('instruction', 'nowhere');
CALL inf_synthesize('instruction', 'local', max_items => 0);
CALL inf_synthesize('instruction', 'local', batch_size => 5000);
CALL inf_synthesize('judge', 'local', prompt_version => 7);
CALL inf_synthesize('negatives', 'local', filter => 'no_such_column = 1');
-- A filter is one SQL condition, never statements: nothing in it runs.
CREATE TABLE llm_victim AS SELECT 1 AS x;
CALL inf_synthesize('instruction', 'local', filter => 'true); DELETE FROM llm_victim; SELECT count(*) FROM inf_ir.seed_qrels WHERE (true');
CALL inf_synthesize('instruction', 'local', filter => 'true) FROM llm_victim WHERE (true');
CALL inf_synthesize('instruction', 'local', filter => 'true), (1');
CALL inf_synthesize('instruction', 'local', filter => 'query_id = ');
SELECT count(*) AS victim_rows_kept FROM llm_victim;
DROP TABLE llm_victim;
CALL inf_synthesize('instruction', 'local', mode => 'offline');
CALL inf_synthesize('instruction', 'local', mode => 'batch', batch_size => 60000);
CALL inf_synthesize_collect(true, 0);
CALL inf_synthesize_collect(false);   -- no batch is open: nothing to do
BEGIN;
CALL inf_synthesize('instruction', 'local');
ROLLBACK;
-- Nothing pending: the run ends at once without a request (the endpoint's port 9 is closed).
CALL inf_synthesize('instruction', 'local', filter => $$query_id LIKE 'x%' AND metadata @> '{"lang": "en"}'$$);
SELECT run_id, stage, endpoint, model, prompt_version, state, processed, total, percent, eta, cost, error
FROM inf_ir.llm_progress;
SELECT count(*) AS items, (SELECT count(*) FROM inf_ir.llm_failures) AS failures FROM inf_ir.llm_items;

-- Other roles read the endpoints (no secret in them) but cannot change or use them.
CREATE ROLE inf_ir_llm_user LOGIN;
SET ROLE inf_ir_llm_user;
SELECT count(*) AS endpoints_visible FROM inf_ir.llm_endpoints;
SELECT inf_set_endpoint('mine', 'http://evil.example', 'm');
SELECT inf_drop_endpoint('local');
INSERT INTO inf_ir.llm_endpoints(name, base_url, model) VALUES ('mine', 'http://evil.example', 'm');
UPDATE inf_ir.llm_endpoints SET base_url = 'http://evil.example';
INSERT INTO inf_ir.llm_prompts(stage, version, template, reply_schema) VALUES ('judge', 9, 't', '{}');
SELECT inf_llm_chat('local', 'instruction', '{"query": "q", "passage": "p"}');
SELECT * FROM inf_llm_batch('local', 'instruction', ARRAY['{"query": "q", "passage": "p"}']::jsonb[]);
CALL inf_synthesize('instruction', 'local');
CALL inf_synthesize_collect();
SELECT count(*) AS runs_visible FROM inf_ir.llm_progress;
INSERT INTO inf_ir.llm_runs(stage, endpoint, model, prompt_version, batch_size, retry_failed) VALUES ('judge', 'local', 'm', 1, 1, false);
RESET ROLE;
DROP ROLE inf_ir_llm_user;

SELECT inf_drop_endpoint('keyed'), inf_drop_endpoint('keyfile'), inf_drop_endpoint('local'), inf_drop_endpoint('local');
SELECT count(*) FROM inf_ir.llm_endpoints;
TRUNCATE inf_ir.llm_runs CASCADE;
