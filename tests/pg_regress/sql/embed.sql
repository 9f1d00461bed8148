-- Embedding functions: shapes, norms, NULLs, instructions, batching, truncation.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;
-- Batched and single runs pad differently, so compare by cosine, not bit for bit.
CREATE FUNCTION pg_temp.same(a real[], b real[]) RETURNS boolean LANGUAGE sql IMMUTABLE AS
  $$ SELECT sum(x::float8 * y::float8) > 0.99999 FROM unnest(a, b) AS t(x, y) $$;

-- The server's default model was registered by CREATE EXTENSION.
SELECT name, pooling, dimension, max_tokens, query_template, passage_template,
       length(fingerprint) AS fingerprint_len
FROM inf_ir.models;

-- 384 dimensions, unit length.
SELECT array_length(inf_embed('hello world'), 1) AS dims,
       round((SELECT sqrt(sum(x::float8 * x::float8)) FROM unnest(inf_embed('hello world')) x)::numeric, 5) AS norm;

-- all-MiniLM-L6-v2's published vector for "hello world" starts like this.
SELECT (SELECT array_agg(round(x::numeric, 4)) FROM unnest((inf_embed('hello world'))[1:4]) x) AS head;

-- A NULL text or query gives NULL; a NULL or empty instruction means none.
SELECT inf_embed(NULL) IS NULL AS null_passage,
       inf_embed_query('only reviews', NULL) IS NULL AS null_query,
       inf_embed_query(NULL, 'vitamin d') = inf_embed('vitamin d') AS null_instruction_is_bare_query,
       inf_embed_query('', 'vitamin d') = inf_embed_query(NULL, 'vitamin d') AS empty_instruction_is_none,
       inf_embed_query('  ', 'vitamin d') = inf_embed_query(NULL, 'vitamin d') AS blank_instruction_is_none;

-- The instruction changes the vector; the InF-IR form is "{query} {instruction}".
SELECT inf_embed_query('only peer-reviewed sources', 'vitamin d') <> inf_embed('vitamin d') AS differs,
       inf_embed_query('only peer-reviewed sources', 'vitamin d')
         = inf_embed('vitamin d only peer-reviewed sources') AS template_form;

-- An empty passage still embeds (special tokens only).
SELECT array_length(inf_embed(''), 1) AS empty_text_dims;

-- Explicit model name, positional and named.
SELECT inf_embed('x', 'minilm') = inf_embed('x') AS by_name,
       inf_embed_query('i', 'q', model => 'minilm') = inf_embed_query('i', 'q') AS named;

-- Array forms: one row per input, in order; NULL elements give NULL rows;
-- batching does not change the vectors.
SELECT ord, embedding IS NULL AS is_null,
       pg_temp.same(embedding, inf_embed((ARRAY['alpha', NULL, 'gamma delta', ''])[ord])) AS same_as_single
FROM inf_embed_many(ARRAY['alpha', NULL, 'gamma delta', '']);

SELECT count(*) FROM inf_embed_many(ARRAY[]::text[]);
SELECT count(*) FROM inf_embed_many(NULL);

-- One instruction for all queries, or one per query.
SELECT ord, pg_temp.same(embedding, inf_embed_query('be brief', (ARRAY['q1', 'q2'])[ord])) AS one_for_all
FROM inf_embed_query_many(ARRAY['be brief'], ARRAY['q1', 'q2']);
SELECT ord, pg_temp.same(embedding, inf_embed_query((ARRAY['i1', NULL])[ord], (ARRAY['q1', 'q2'])[ord])) AS per_query
FROM inf_embed_query_many(ARRAY['i1', NULL], ARRAY['q1', 'q2']);
SELECT ord, pg_temp.same(embedding, inf_embed((ARRAY['q1', 'q2'])[ord])) AS no_instruction
FROM inf_embed_query_many(NULL, ARRAY['q1', 'q2']);
SELECT * FROM inf_embed_query_many(ARRAY['a', 'b', 'c'], ARRAY['q1', 'q2']);

-- A 1 MB text is truncated to the model's 256 tokens, not refused: it equals
-- its own first few kilobytes.
SELECT inf_embed(repeat('retrieval ', 100000)) = inf_embed(repeat('retrieval ', 300)) AS truncated;
-- A long query is cut but the instruction survives whole.
SELECT inf_embed_query('about cats', repeat('dogs ', 1000))
         <> inf_embed_query('about birds', repeat('dogs ', 1000)) AS instruction_kept;

-- Casting to a float array (or pgvector's vector, where installed) works.
SELECT pg_typeof(inf_embed('x')::float8[]) AS as_float8;

-- Volatility, strictness and parallel labels of every inf_ function, as documented.
SELECT proname, provolatile, proisstrict, proparallel
FROM pg_proc WHERE proname LIKE 'inf\_%' ORDER BY proname;
