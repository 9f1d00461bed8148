-- LLM re-ranking (inf_rerank_llm, inf_search_reranked): its prompts,
-- who may call it, the cache's and the call log's row security, the errors
-- it gives before anything is sent, and the fall-back when the endpoint
-- cannot be reached.
-- (Requests themselves: tests/python/test_rerank.py.)
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;

-- The default prompts of the three modes.
SELECT stage, version, reply_schema FROM inf_ir.llm_prompts WHERE stage LIKE 'rerank%' ORDER BY stage;

-- Errors before any request (port 9 is closed; none of these reaches it).
SELECT inf_set_endpoint('rr', 'http://127.0.0.1:9/v1', 'm', max_attempts => 1);
SELECT * FROM inf_rerank_llm('i', NULL, ARRAY[1]::bigint[], 'rr');
SELECT * FROM inf_rerank_llm('i', 'q', NULL, 'rr');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], NULL);
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'nowhere');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr', mode => 'pairwise');
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr', k => 0);
-- No visible candidate: nothing to judge, no request.
SELECT count(*) AS rows FROM inf_rerank_llm('i', 'q', ARRAY[]::bigint[], 'rr');
SELECT count(*) AS rows FROM inf_rerank_llm('i', 'q', ARRAY[-1]::bigint[], 'rr');
SELECT count(*) AS rows FROM inf_rerank_llm('i', 'q', ARRAY[-1]::bigint[], 'rr', mode => 'listwise');

-- inf_search_reranked: a corpus to search.
SELECT inf_create_corpus('rr_pets') > 0 AS created;
INSERT INTO inf_ir.passages(corpus_id, external_id, body)
SELECT corpus_id, x.id, x.body
FROM inf_ir.corpora, (VALUES
  ('d1', 'Cats sleep for twelve to sixteen hours a day.'),
  ('d2', 'Dogs need a daily walk and regular exercise.'),
  ('d3', 'Kittens sleep even longer than adult cats.')) AS x(id, body)
WHERE name = 'rr_pets';
CALL inf_embed_corpus('rr_pets');
-- A NULL endpoint is the plain search (relevance NULL), rank for rank.
SELECT r.rank, r.external_id, r.relevance, r.score = s.score AS same_score
FROM inf_search_reranked(NULL, 'how long do cats sleep', NULL, corpus => 'rr_pets') r
JOIN inf_search(NULL, 'how long do cats sleep', 10, 'rr_pets') s USING (rank, external_id);
SELECT * FROM inf_search_reranked(NULL, 'cats', 'rr', corpus => 'rr_pets', rerank_mode => 'pairwise');
SELECT * FROM inf_search_reranked(NULL, 'cats', 'rr', corpus => 'rr_pets', rerank_depth => 0);
-- The endpoint cannot be reached (port 9): an ERROR by default, nothing partial ...
SELECT count(*) FROM inf_search_reranked(NULL, 'cats', 'rr', corpus => 'rr_pets');
-- ... or the bi-encoder's order with a WARNING; the call is logged with why.
SET inf_ir.rerank_on_failure = retriever;
SET client_min_messages = error;
SELECT rank, external_id, relevance FROM inf_search_reranked(NULL, 'how long do cats sleep', 'rr', k => 2, corpus => 'rr_pets');
SET client_min_messages = warning;
RESET inf_ir.rerank_on_failure;
SELECT endpoint, model, mode, candidates, cached, judged, requests, prompt_tokens, cost, fell_back IS NOT NULL AS fell_back
FROM inf_ir.rerank_calls;
SELECT endpoint, calls, candidates, cache_hit_rate, fell_back FROM inf_ir.rerank_usage;
-- A read-only transaction (a standby, say) re-ranks without writing the cache or the log.
BEGIN READ ONLY;
SET LOCAL inf_ir.rerank_on_failure = retriever;
SET LOCAL client_min_messages = error;
SELECT count(*) AS rows FROM inf_search_reranked(NULL, 'how long do cats sleep', 'rr', k => 2, corpus => 'rr_pets');
COMMIT;
SELECT count(*) AS calls FROM inf_ir.rerank_calls;
SELECT inf_drop_corpus('rr_pets');

-- Other roles may not call it unless granted; the cache shows each role its own rows.
CREATE ROLE inf_ir_rerank_user LOGIN;
SET ROLE inf_ir_rerank_user;
SELECT * FROM inf_rerank_llm('i', 'q', ARRAY[1]::bigint[], 'rr');
SELECT * FROM inf_search_reranked('i', 'q', 'rr');
SELECT count(*) AS calls_seen FROM inf_ir.rerank_calls;
INSERT INTO inf_ir.rerank_judgments (role, model, mode, prompt_version, instruction_hash, query_hash, passage_hash, relevance)
VALUES ('postgres', 'm', 'logprobs', 1, 'a', 'b', 'c', 1.0);
INSERT INTO inf_ir.rerank_judgments (model, mode, prompt_version, instruction_hash, query_hash, passage_hash, relevance)
VALUES ('m', 'logprobs', 1, 'a', 'b', 'c', 1.0);
SELECT role, relevance FROM inf_ir.rerank_judgments;
RESET ROLE;
DELETE FROM inf_ir.rerank_judgments;
DELETE FROM inf_ir.rerank_calls;
DROP ROLE inf_ir_rerank_user;
SELECT inf_drop_endpoint('rr');
