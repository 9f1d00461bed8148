-- LLM re-ranking (inf_rerank_llm): its prompts, who may call it, the cache
-- table's row security, and the errors it gives before anything is sent.
-- (Requests themselves: tests/python/test_rerank.py.)
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;

-- The default prompts of both modes.
SELECT stage, version, reply_schema FROM inf_ir.llm_prompts WHERE stage LIKE 'rerank%' ORDER BY stage;

-- Errors before any request (port 9 is closed; none of these reaches it).
SELECT inf_set_endpoint('rr', 'http://127.0.0.1:9/v1', 'm', max_attempts => 1);
SELECT * FROM inf_rerank_llm('i', NULL, ARRAY[1]::bigint[], 'rr');
SELECT * FROM inf_rerank_llm('i', 'q', NULL, 'rr');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], NULL);
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'nowhere');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr', mode => 'listwise');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr', k => 0);
-- No visible candidate: nothing to judge, no request.
SELECT count(*) AS rows FROM inf_rerank_llm('i', 'q', ARRAY[]::bigint[], 'rr');
SELECT count(*) AS rows FROM inf_rerank_llm('i', 'q', ARRAY[-1]::bigint[], 'rr');

-- Other roles may not call it unless granted; the cache shows each role its own rows.
CREATE ROLE inf_ir_rerank_user LOGIN;
SET ROLE inf_ir_rerank_user;
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr');
INSERT INTO inf_ir.rerank_judgments (role, model, mode, prompt_version, instruction_hash, query_hash, passage_hash, relevance)
VALUES ('postgres', 'm', 'logprobs', 1, 'a', 'b', 'c', 1.0);
INSERT INTO inf_ir.rerank_judgments (model, mode, prompt_version, instruction_hash, query_hash, passage_hash, relevance)
VALUES ('m', 'logprobs', 1, 'a', 'b', 'c', 1.0);
SELECT role, relevance FROM inf_ir.rerank_judgments;
RESET ROLE;
DELETE FROM inf_ir.rerank_judgments;
DROP ROLE inf_ir_rerank_user;
SELECT inf_drop_endpoint('rr');
