-- LLM re-ranking (inf_rerank_llm): its prompts and the cache of judgments.
--
-- 'rerank' asks for one word, Yes or No, whose log-probabilities give the
-- relevance (endpoints that return logprobs); 'rerank_graded' asks for a
-- JSON grade 0-3 (any endpoint). Add versions with INSERT as for the
-- synthesis stages; the newest is used.
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
 'inf_rerank_llm without logprobs: relevance = grade / 3');

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
