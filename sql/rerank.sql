-- LLM re-ranking (inf_rerank_llm): its prompts and the cache of judgments.
--
-- 'rerank' asks for one word, Yes or No, whose log-probabilities give the
-- relevance (endpoints that return logprobs); 'rerank_graded' asks for a
-- JSON grade 0-3 (any endpoint); 'rerank_listwise' shows a window of
-- numbered passages and asks for their order. Add versions with INSERT as
-- for the synthesis stages; the newest is used.
INSERT INTO inf_ir.llm_prompts (stage, version, system, template, reply_schema, max_slot_chars, note) VALUES
('rerank', 1,
 'You judge search results for a search engine that follows instructions. Answer with one word: Yes or No.',
 $t$Search query: {{query}}
Instruction: {{instruction}}
Passage: """{{passage}}"""

Does the passage satisfy the search query together with the instruction? Everything the instruction asks for must hold; a passage that only matches the query is not enough. Answer Yes or No.$t$,
 '{}', 4000,
 'inf_rerank_llm: relevance = P(Yes) / (P(Yes) + P(No)) from the answer''s log-probabilities'),
('rerank_graded', 1,
 'You judge search results for a search engine that follows instructions. Reply with JSON only.',
 $t$Search query: {{query}}
Instruction: {{instruction}}
Passage: """{{passage}}"""

Grade how well the passage satisfies the search query together with the instruction: 0 = not about the query, 1 = about the query but not what the instruction asks, 2 = mostly what the instruction asks, 3 = fully. Everything the instruction asks for must hold for 3.

Reply as JSON: {"relevance": 0}$t$,
 '{"type": "object", "properties": {"relevance": {"type": "integer", "minimum": 0, "maximum": 3}},
   "required": ["relevance"], "additionalProperties": false}', 4000,
 'inf_rerank_llm without logprobs: relevance = grade / 3'),
('rerank_listwise', 1,
 'You rank search results for a search engine that follows instructions. Reply with JSON only.',
 $t$Search query: {{query}}
Instruction: {{instruction}}

Passages:
{{passages}}

Rank the {{count}} passages above from the one that best satisfies the search query together with the instruction to the one that satisfies it least. Everything the instruction asks for must hold; a passage that only matches the query ranks below one that also does what the instruction asks.

Reply as JSON with every passage number exactly once, best first: {"ranking": [2, 1, 3]}$t$,
 '{"type": "object", "properties": {"ranking": {"type": "array", "items": {"type": "integer", "minimum": 1}}},
   "required": ["ranking"], "additionalProperties": false}', 30000,
 'inf_rerank_llm mode listwise: windows of 10 passages (each cut to 1,200 characters) from the end of the list to its front, 5 apart; relevance from the final place');

-- Judgments already made, so that a repeated search costs no request. The
-- key is the endpoint's model, the mode, the prompt version and SHA-256
-- hashes of the texts (no text is kept). Rows are per role (row-level
-- security): a role reads and writes only its own, so no role can plant a
-- judgment that changes another's ranking.
CREATE TABLE inf_ir.rerank_judgments (
    role              name NOT NULL DEFAULT current_user,
    model             text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('logprobs', 'graded')),
    prompt_version    integer NOT NULL,
    instruction_hash  text NOT NULL,
    query_hash        text NOT NULL,
    passage_hash      text NOT NULL,
    relevance         double precision NOT NULL CHECK (relevance BETWEEN 0 AND 1),
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    judged_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, model, mode, prompt_version, instruction_hash, query_hash, passage_hash)
);
ALTER TABLE inf_ir.rerank_judgments ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_judgments ON inf_ir.rerank_judgments
    USING (role = current_user) WITH CHECK (role = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON inf_ir.rerank_judgments TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.rerank_judgments', '');

-- One row per re-ranking call (inf_rerank_llm, inf_search_reranked):
-- what it cost and how much the cache saved. Per role, as the cache. A call
-- that ended in an ERROR leaves no row (its transaction is rolled back).
CREATE TABLE inf_ir.rerank_calls (
    call_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role              name NOT NULL DEFAULT current_user,
    called_at         timestamptz NOT NULL DEFAULT now(),
    endpoint          text NOT NULL,
    model             text NOT NULL,
    mode              text,
    candidates        bigint NOT NULL,
    cached            bigint NOT NULL,
    judged            bigint NOT NULL,
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost              numeric,
    elapsed_ms        double precision NOT NULL,
    fell_back         text
);
COMMENT ON COLUMN inf_ir.rerank_calls.cost IS 'dollars at the endpoint''s prices; NULL when it has none';
COMMENT ON COLUMN inf_ir.rerank_calls.fell_back IS 'why the call returned the bi-encoder''s order (inf_ir.rerank_on_failure = retriever); NULL when it re-ranked';
ALTER TABLE inf_ir.rerank_calls ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_calls ON inf_ir.rerank_calls
    USING (role = current_user) WITH CHECK (role = current_user);
GRANT SELECT, INSERT, DELETE ON inf_ir.rerank_calls TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.rerank_calls', '');

-- Per endpoint, model and mode: calls, the cache's hit rate, tokens, cost
-- and latency (security_invoker: each role sees its own calls).
CREATE VIEW inf_ir.rerank_usage WITH (security_invoker = true) AS
SELECT endpoint, model, mode,
       count(*) AS calls,
       sum(candidates) AS candidates,
       round(sum(cached)::numeric / nullif(sum(candidates), 0), 3) AS cache_hit_rate,
       sum(requests) AS requests,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost) AS cost,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY elapsed_ms))::numeric, 1) AS p50_ms,
       count(fell_back) AS fell_back
FROM inf_ir.rerank_calls
GROUP BY endpoint, model, mode;
GRANT SELECT ON inf_ir.rerank_usage TO PUBLIC;
