-- LLM endpoints and prompt templates for the InF-IR synthesis stages
-- (instruction, negatives, judge). An endpoint makes the server open
-- network connections, so only superusers change them (inf_set_endpoint /
-- inf_drop_endpoint check it). No API key is ever stored: a row names where
-- the server finds it (an environment variable of the server process, or a
-- file only the server's OS user can read).
CREATE TABLE inf_ir.llm_endpoints (
    name                     text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]*$'),
    -- No user:password@ (every role reads this table): keys come from api_key_env / api_key_file.
    base_url                 text NOT NULL CHECK (base_url ~ '^https?://[^/]+' AND base_url !~ '^[^:/?#]+://[^/?#]*@'),
    model                    text NOT NULL CHECK (btrim(model) <> ''),
    api_key_env              text CHECK (api_key_env ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    api_key_file             text CHECK (api_key_file LIKE '/%'),
    reply_format             text NOT NULL DEFAULT 'json_schema' CHECK (reply_format IN ('json_schema', 'json_object')),
    max_concurrency          integer NOT NULL DEFAULT 4 CHECK (max_concurrency BETWEEN 1 AND 256),
    requests_per_minute      integer CHECK (requests_per_minute > 0),
    tokens_per_minute        integer CHECK (tokens_per_minute > 0),
    timeout_ms               integer NOT NULL DEFAULT 60000 CHECK (timeout_ms BETWEEN 100 AND 3600000),
    max_output_tokens        integer NOT NULL DEFAULT 512 CHECK (max_output_tokens BETWEEN 1 AND 100000),
    temperature              real NOT NULL DEFAULT 0.7 CHECK (temperature BETWEEN 0 AND 2),
    max_attempts             integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 20),
    input_price_per_million  numeric CHECK (input_price_per_million >= 0),
    output_price_per_million numeric CHECK (output_price_per_million >= 0),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (api_key_env IS NULL OR api_key_file IS NULL)
);
REVOKE ALL ON inf_ir.llm_endpoints FROM PUBLIC;
GRANT SELECT ON inf_ir.llm_endpoints TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_endpoints', '');

-- Versioned prompts per stage. `template` fills {{slots}} (see README);
-- replies must match `reply_schema` (JSON Schema) before anything is stored.
-- Passages have no maxLength: llama.cpp turns a bound into that many
-- grammar rules and gives up (and its Python server dies) in the thousands;
-- the endpoint's max_output_tokens bounds them instead.
-- Version 1 of each stage comes with the extension; add versions with
-- INSERT (superusers, or roles they grant INSERT to).
CREATE TABLE inf_ir.llm_prompts (
    stage        text NOT NULL CHECK (stage IN ('instruction', 'negatives', 'judge', 'rerank', 'rerank_graded', 'rerank_listwise')),
    version      integer NOT NULL CHECK (version > 0),
    system       text NOT NULL DEFAULT '',
    template     text NOT NULL CHECK (btrim(template) <> ''),
    reply_schema jsonb NOT NULL CHECK (jsonb_typeof(reply_schema) = 'object'),
    -- Longer slot values (passages) are cut to this many characters.
    max_slot_chars integer NOT NULL DEFAULT 4000 CHECK (max_slot_chars BETWEEN 100 AND 1000000),
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, version)
);
REVOKE ALL ON inf_ir.llm_prompts FROM PUBLIC;
GRANT SELECT ON inf_ir.llm_prompts TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_prompts', 'WHERE version > 1');

INSERT INTO inf_ir.llm_prompts (stage, version, system, template, reply_schema, note) VALUES
('instruction', 1,
 'You write search instructions for a dataset that trains instruction-following retrieval models. Reply with JSON only.',
 $t$A user searched for: "{{query}}"

This passage answers the search:
"""{{passage}}"""

Write one instruction, one or two sentences long, that the user could add to the search to make it more specific, so that this passage still fully satisfies the search together with the instruction and many other passages about the query would not. The instruction says what kind of document or information is wanted (its focus, scope, detail, audience or source type). Do not repeat the query and do not quote the passage.

Reply as JSON: {"instruction": "..."}$t$,
 '{"type": "object", "properties": {"instruction": {"type": "string", "minLength": 10, "maxLength": 600}},
   "required": ["instruction"], "additionalProperties": false}',
 'InF-IR stage (i): a positive instruction for a (query, passage) pair'),
('negatives', 1,
 'You write hard negatives for a dataset that trains instruction-following retrieval models. Reply with JSON only.',
 $t$Query: "{{query}}"
Instruction: "{{instruction}}"
A passage that satisfies the query together with the instruction:
"""{{passage}}"""

Write two hard negatives, each by a small change:
1. instruction_negative: change the instruction slightly so that the passage above no longer satisfies it while the query stays the same. Then write instruction_negative_passage: two or three sentences in the style of the passage above that satisfy the query together with the changed instruction.
2. query_negative: change the query slightly so that the passage above no longer answers it while the instruction still makes sense. Then write query_negative_passage: two or three sentences that satisfy the changed query together with the original instruction.

Reply as JSON: {"instruction_negative": "...", "instruction_negative_passage": "...", "query_negative": "...", "query_negative_passage": "..."}$t$,
 '{"type": "object", "properties": {
     "instruction_negative": {"type": "string", "minLength": 10, "maxLength": 600},
     "instruction_negative_passage": {"type": "string", "minLength": 20},
     "query_negative": {"type": "string", "minLength": 3, "maxLength": 400},
     "query_negative_passage": {"type": "string", "minLength": 20}},
   "required": ["instruction_negative", "instruction_negative_passage", "query_negative", "query_negative_passage"],
   "additionalProperties": false}',
 'InF-IR stage (ii): an instruction-negative and a query-negative, each with the passage that fits it'),
('judge', 1,
 'You check examples for a dataset that trains instruction-following retrieval models. Reply with JSON only.',
 $t$For each case, score from 0 to 1 how well the passage satisfies the query together with the instruction (1: fully, 0: not at all).

a) query "{{query}}", instruction "{{instruction}}", passage: """{{passage}}"""
b) query "{{query}}", instruction "{{instruction_negative}}", passage: """{{passage}}"""
c) query "{{query}}", instruction "{{instruction_negative}}", passage: """{{instruction_negative_passage}}"""
d) query "{{query_negative}}", instruction "{{instruction}}", passage: """{{passage}}"""
e) query "{{query_negative}}", instruction "{{instruction}}", passage: """{{query_negative_passage}}"""

Set "ambiguous" to true if any case could reasonably be judged either way.
Reply as JSON: {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0, "ambiguous": false}$t$,
 '{"type": "object", "properties": {
     "a": {"type": "number", "minimum": 0, "maximum": 1}, "b": {"type": "number", "minimum": 0, "maximum": 1},
     "c": {"type": "number", "minimum": 0, "maximum": 1}, "d": {"type": "number", "minimum": 0, "maximum": 1},
     "e": {"type": "number", "minimum": 0, "maximum": 1}, "ambiguous": {"type": "boolean"}},
   "required": ["a", "b", "c", "d", "e", "ambiguous"], "additionalProperties": false}',
 'InF-IR stage (iii): a stronger model scores the five pairs of a group; ambiguous groups are dropped');

-- Create or change an endpoint (superusers only).
CREATE FUNCTION @extschema@.inf_set_endpoint(name text, base_url text, model text,
    api_key_env text DEFAULT NULL, api_key_file text DEFAULT NULL,
    reply_format text DEFAULT 'json_schema', max_concurrency integer DEFAULT 4,
    requests_per_minute integer DEFAULT NULL, tokens_per_minute integer DEFAULT NULL,
    timeout_ms integer DEFAULT 60000, max_output_tokens integer DEFAULT 512, temperature real DEFAULT 0.7,
    input_price_per_million numeric DEFAULT NULL, output_price_per_million numeric DEFAULT NULL,
    max_attempts integer DEFAULT 5)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'only superusers may create or change LLM endpoints'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an endpoint makes the server open network connections; ask a superuser';
    END IF;
    IF inf_set_endpoint.name IS NULL OR inf_set_endpoint.base_url IS NULL OR inf_set_endpoint.model IS NULL THEN
        RAISE EXCEPTION 'name, base_url and model must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'for example inf_set_endpoint(''local'', ''http://127.0.0.1:8000/v1'', ''my-model'')';
    END IF;
    IF inf_set_endpoint.base_url ~ '^[^:/?#]+://[^/?#]*@' THEN
        -- The URL itself is not repeated: it holds the secret.
        RAISE EXCEPTION 'base_url must not hold a user name or password'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'every role can read inf_ir.llm_endpoints: give the key with api_key_env or api_key_file (sent as a bearer token)';
    END IF;
    INSERT INTO inf_ir.llm_endpoints AS e (name, base_url, model, api_key_env, api_key_file, reply_format,
        max_concurrency, requests_per_minute, tokens_per_minute, timeout_ms, max_output_tokens, temperature,
        input_price_per_million, output_price_per_million, max_attempts)
    VALUES (inf_set_endpoint.name, rtrim(inf_set_endpoint.base_url, '/'), inf_set_endpoint.model,
        inf_set_endpoint.api_key_env, inf_set_endpoint.api_key_file, inf_set_endpoint.reply_format,
        inf_set_endpoint.max_concurrency, inf_set_endpoint.requests_per_minute, inf_set_endpoint.tokens_per_minute,
        inf_set_endpoint.timeout_ms, inf_set_endpoint.max_output_tokens, inf_set_endpoint.temperature,
        inf_set_endpoint.input_price_per_million, inf_set_endpoint.output_price_per_million,
        inf_set_endpoint.max_attempts)
    ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url, model = EXCLUDED.model,
        api_key_env = EXCLUDED.api_key_env, api_key_file = EXCLUDED.api_key_file,
        reply_format = EXCLUDED.reply_format, max_concurrency = EXCLUDED.max_concurrency,
        requests_per_minute = EXCLUDED.requests_per_minute, tokens_per_minute = EXCLUDED.tokens_per_minute,
        timeout_ms = EXCLUDED.timeout_ms, max_output_tokens = EXCLUDED.max_output_tokens,
        temperature = EXCLUDED.temperature, input_price_per_million = EXCLUDED.input_price_per_million,
        output_price_per_million = EXCLUDED.output_price_per_million, max_attempts = EXCLUDED.max_attempts,
        updated_at = now();
END $$;

CREATE FUNCTION @extschema@.inf_drop_endpoint(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE found boolean;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'only superusers may drop LLM endpoints'
            USING ERRCODE = 'insufficient_privilege', HINT = 'ask a superuser';
    END IF;
    DELETE FROM inf_ir.llm_endpoints e WHERE e.name = inf_drop_endpoint.name RETURNING true INTO found;
    RETURN coalesce(found, false);
END $$;
REVOKE EXECUTE ON FUNCTION @extschema@.inf_set_endpoint(text, text, text, text, text, text, integer, integer,
    integer, integer, integer, real, numeric, numeric, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.inf_drop_endpoint(text) FROM PUBLIC;


-- Stage runs (inf_synthesize): one row per CALL, updated at each committed
-- batch. `state` 'running' of a backend that is gone reads as 'interrupted'
-- in inf_ir.llm_progress (and is marked so by the next run).
CREATE TABLE inf_ir.llm_runs (
    run_id            bigserial PRIMARY KEY,
    stage             text NOT NULL,
    endpoint          text NOT NULL,
    model             text NOT NULL,
    prompt_version    integer NOT NULL,
    filter            text,
    max_items         integer,
    batch_size        integer NOT NULL,
    retry_failed      boolean NOT NULL,
    mode              text NOT NULL DEFAULT 'direct' CHECK (mode IN ('direct', 'batch')),
    -- batch mode: 'submitted' once its Batch API batches are made, 'done' once ingested.
    state             text NOT NULL DEFAULT 'running'
                      CHECK (state IN ('running', 'submitted', 'done', 'cancelled', 'failed', 'interrupted')),
    error             text,
    total             bigint NOT NULL DEFAULT 0,   -- items pending at the start, capped by max_items
    done              bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    skipped           bigint NOT NULL DEFAULT 0,
    submitted         bigint NOT NULL DEFAULT 0,   -- batch mode: requests in batches not yet ingested
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric,                    -- dollars, when the endpoint has prices
    run_by            name NOT NULL DEFAULT current_user,
    pid               integer NOT NULL DEFAULT pg_backend_pid(),
    backend_start     timestamptz,
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz
);

-- Batch mode: one row per Batch API batch. A row is committed (with its
-- items claimed in inf_ir.llm_items as 'submitted') before anything is
-- sent, and tags the endpoint's batch with its random `tag` (metadata
-- inf_ir_batch), so a call killed between the two finds the batch it made
-- instead of making another. `items` holds what each request (custom_id
-- i<n>) is for.
CREATE TABLE inf_ir.llm_batches (
    batch_id       bigserial PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES inf_ir.llm_runs ON DELETE CASCADE,
    stage          text NOT NULL,
    endpoint       text NOT NULL,
    prompt_version integer NOT NULL,
    requests       integer NOT NULL,
    items          jsonb NOT NULL,
    tag            uuid NOT NULL DEFAULT gen_random_uuid(),
    remote_id      text,             -- the endpoint's batch id
    status         text NOT NULL DEFAULT 'preparing',  -- then the endpoint's status
    error          text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    submitted_at   timestamptz,
    checked_at     timestamptz,
    ingested_at    timestamptz
);
CREATE INDEX llm_batches_open ON inf_ir.llm_batches (batch_id) WHERE ingested_at IS NULL;

-- Every item a stage has processed, committed with what it made: the ledger
-- that makes a rerun skip work already done (exactly once, even after a
-- killed run) and keeps each failure with the model's reply. `item` is the
-- seed pair '["query_id", "passage_id"]' (instruction), the group id
-- (negatives) or '[group_id, "llm:model"]' (judge). Deleting a group forgets
-- its items, so a stage can make it again.
CREATE TABLE inf_ir.llm_items (
    stage             text NOT NULL,
    item              text NOT NULL,
    run_id            bigint NOT NULL REFERENCES inf_ir.llm_runs ON DELETE CASCADE,
    outcome           text NOT NULL CHECK (outcome IN ('done', 'failed', 'skipped', 'submitted')),
    batch_id          bigint REFERENCES inf_ir.llm_batches ON DELETE SET NULL,  -- batch mode
    group_id          bigint REFERENCES inf_ir.tuple_groups ON DELETE CASCADE,
    failure           text,
    reply_text        text,
    attempts          integer NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    finished_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stage, item)
);
CREATE INDEX llm_items_run ON inf_ir.llm_items (run_id);
CREATE INDEX llm_items_group ON inf_ir.llm_items (group_id);
REVOKE ALL ON inf_ir.llm_runs, inf_ir.llm_items, inf_ir.llm_batches FROM PUBLIC;
GRANT SELECT ON inf_ir.llm_runs, inf_ir.llm_items, inf_ir.llm_batches TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_batches', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_batches_batch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_runs', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_runs_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.llm_items', '');

-- Runs with their rate, ETA and true state.
CREATE VIEW inf_ir.llm_progress AS
SELECT r.run_id, r.stage, r.endpoint, r.model, r.prompt_version,
       CASE WHEN r.state = 'running' AND NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_stat_activity a
                WHERE a.pid = r.pid AND (a.backend_start IS NULL OR a.backend_start = r.backend_start))
            THEN 'interrupted' ELSE r.state END AS state,
       r.mode, n.processed, r.total, r.done, r.failed, r.skipped, r.submitted,
       round(100.0 * n.processed / nullif(r.total, 0), 1) AS percent,
       round((n.processed / nullif(extract(epoch FROM r.updated_at - r.started_at), 0))::numeric, 3) AS items_per_second,
       CASE WHEN r.state = 'running' AND n.processed > 0 AND n.processed < r.total
            THEN (r.updated_at - r.started_at) * ((r.total - n.processed)::float8 / n.processed) END AS eta,
       r.prompt_tokens, r.completion_tokens, r.cost, r.started_at, r.updated_at, r.finished_at, r.error, r.pid
FROM inf_ir.llm_runs r, LATERAL (SELECT r.done + r.failed + r.skipped AS processed) n;
GRANT SELECT ON inf_ir.llm_progress TO PUBLIC;

-- Items that did not become rows: failures (with the model's reply) and
-- skips (what was made is already stored).
CREATE VIEW inf_ir.llm_failures AS
SELECT i.stage, i.item, i.outcome, i.failure, i.reply_text, i.attempts, i.run_id, i.group_id, i.finished_at
FROM inf_ir.llm_items i WHERE i.outcome IN ('failed', 'skipped');
GRANT SELECT ON inf_ir.llm_failures TO PUBLIC;
