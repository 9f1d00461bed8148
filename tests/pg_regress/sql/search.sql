-- Corpora, loading, embedding maintenance, inf_search / inf_search_vector / inf_rerank.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
-- NOTICEs are shown only where they are deterministic (progress ones carry a rate).

SELECT inf_create_corpus('pets') > 0 AS created;
INSERT INTO inf_ir.passages(corpus_id, external_id, title, body)
SELECT corpus_id, x.id, x.title, x.body
FROM inf_ir.corpora, (VALUES
  ('d1', NULL, 'Cats sleep for twelve to sixteen hours a day.'),
  ('d2', 'Dogs', 'Dogs need a daily walk and regular exercise.'),
  ('d3', NULL, 'Goldfish can live for more than ten years in a good tank.'),
  ('d4', NULL, 'A randomized trial found that cat owners had lower blood pressure.'),
  ('d5', NULL, 'Parrots can learn to imitate human speech.')) AS x(id, title, body)
WHERE name = 'pets';

-- Not embedded yet: a clear ERROR with the remedy.
SELECT * FROM inf_search(NULL, 'how long do cats sleep', 3, 'pets');

-- Embed, committing per batch (progress NOTICEs carry a rate, so they are
-- hidden here; the view shows what was done).
CALL inf_embed_corpus('pets', 2);
SELECT corpus, model, total, embedded, pending, last_run_done, last_run_total, last_run_finished
FROM inf_ir.embedding_progress WHERE corpus = 'pets';

SELECT rank, external_id, round(score::numeric, 3) > 0 AS positive, body
FROM inf_search(NULL, 'how long do cats sleep', 3, 'pets');

-- The instruction changes the ranking.
SELECT rank, external_id FROM inf_search('only scientific studies', 'cats', 2, 'pets');
SELECT rank, external_id FROM inf_search(NULL, 'cats', 2, 'pets');

-- inf_search equals an exact scan in plain SQL.
SELECT array_agg(external_id ORDER BY rank) = (
         SELECT array_agg(external_id ORDER BY s DESC, passage_id)
         FROM (SELECT p.external_id, p.passage_id,
                      (SELECT sum(a::float8 * b::float8) FROM unnest(p.embedding, inf_embed_query(NULL, 'pet health')) t(a, b)) s
               FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'pets') x)
       AS same_as_sql_scan
FROM inf_search(NULL, 'pet health', 5, 'pets');

-- The corpus's vector index, made by inf_embed_corpus; searches use it.
SELECT inf_corpus_index('pets') LIKE 'passages_ivf_%' AS index_name,
       (SELECT ok FROM inf_index_check(('inf_ir.' || inf_corpus_index('pets'))::regclass)) AS index_ok;
-- Exact mode (every passage scanned) gives the same ranking here.
SET inf_ir.exact_search = on;
SELECT array_agg(external_id ORDER BY rank) AS exact_ranking FROM inf_search(NULL, 'pet health', 5, 'pets');
RESET inf_ir.exact_search;
SELECT array_agg(external_id ORDER BY rank) AS index_ranking FROM inf_search(NULL, 'pet health', 5, 'pets');
-- Where index scans rank (per session): auto, cpu or cuda. Without a GPU
-- (here) cuda answers on the CPU index, with a NOTICE saying why (muted by
-- client_min_messages here: the reason differs between local and worker mode).
SHOW inf_ir.search_device;
SET inf_ir.search_device = gpu;
SET inf_ir.search_device = cuda;
SELECT array_agg(external_id ORDER BY rank) AS cuda_ranking FROM inf_search(NULL, 'pet health', 5, 'pets');
RESET inf_ir.search_device;

-- Metadata filters inside the search.
UPDATE inf_ir.passages SET metadata = '{"kind": "study"}' WHERE external_id = 'd4';
UPDATE inf_ir.passages SET metadata = '{"kind": "fact"}' WHERE external_id IN ('d1', 'd3');
SELECT rank, external_id FROM inf_search(NULL, 'cats', 5, 'pets', filter => '{"kind": "fact"}');
SELECT count(*) AS no_match FROM inf_search(NULL, 'cats', 5, 'pets', filter => '{"kind": "none"}');
-- A filter is a JSON object; anything else is an ERROR, not an empty result.
SELECT count(*) FROM inf_search(NULL, 'cats', 5, 'pets', filter => '[1, 2]');
SELECT count(*) FROM inf_search(NULL, 'cats', 5, 'pets', filter => '"fact"');
SELECT count(*) FROM inf_search(NULL, 'cats', 5, 'pets', filter => '3');
SELECT count(*) FROM inf_search(NULL, 'cats', 5, 'pets', filter => 'null');
SELECT count(*) AS empty_object_keeps_all FROM inf_search(NULL, 'cats', 5, 'pets', filter => '{}');

-- A filter that keeps few passages is answered exactly (every passage it
-- keeps is scored, found through the corpus's metadata index), whatever
-- inf_ir.probes says; inf_ir.exact_filter_rows = 0 sends it through the
-- vector index, whose scan goes on to further lists until k rows pass.
SELECT inf_create_corpus('filtered') > 0 AS created;
SELECT count(*) AS metadata_index FROM pg_indexes
WHERE indexname = 'passages_metadata_' || (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'filtered');
SELECT setseed(0.42) IS NULL AS seeded;  -- random vectors: their neighbours spread over lists
INSERT INTO inf_ir.passages(corpus_id, external_id, body, metadata, embedding, embedded_with)
SELECT c.corpus_id, i::text, 'row ' || i, jsonb_build_object('shard', i % 50),
       ARRAY(SELECT (random() - 0.5 + 0 * i)::real FROM generate_series(1, 384) j), m.fingerprint
FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model, generate_series(1, 20000) i
WHERE c.name = 'filtered';
SELECT inf_corpus_index('filtered') LIKE 'passages_ivf_%' AS indexed;
ANALYZE inf_ir.passages;
CREATE TEMP TABLE fq AS SELECT ARRAY(SELECT cos(j * 0.37)::real FROM generate_series(1, 384) j) AS v;
CREATE FUNCTION filtered_top(shard int) RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(external_id ORDER BY rank)
  FROM inf_search_vector((SELECT v FROM fq), 10, 'filtered', filter => jsonb_build_object('shard', shard)) $$;
CREATE FUNCTION exact_filtered_top(shard int) RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(external_id) FROM (
    SELECT external_id FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id)
    WHERE c.name = 'filtered' AND p.metadata @> jsonb_build_object('shard', shard)
    ORDER BY (1 - inf_cosine_distance(p.embedding, (SELECT v FROM fq)))::real DESC, p.passage_id LIMIT 10) s $$;
SET inf_ir.probes = 1;
SELECT bool_and(filtered_top(s) = exact_filtered_top(s)) AS exact_for_every_shard FROM generate_series(0, 49) s;
SET inf_ir.exact_filter_rows = 0;
SELECT bool_and(cardinality(filtered_top(s)) = 10) AS index_path_fills_k,
       count(*) FILTER (WHERE filtered_top(s) = exact_filtered_top(s)) < 50 AS index_path_is_approximate
FROM generate_series(0, 49) s;
-- The shards where the index's answer is not the exact one tell the paths apart.
CREATE TEMP TABLE through_index AS
SELECT s, filtered_top(s) AS top FROM generate_series(0, 49) s WHERE filtered_top(s) <> exact_filtered_top(s);
-- A cap below what the filter keeps (400 passages a shard) falls back to the index.
SET inf_ir.exact_filter_rows = 250;
SELECT count(*) > 0 AND bool_and(filtered_top(s) = top) AS capped_falls_back_to_index FROM through_index;
RESET inf_ir.exact_filter_rows;
-- A filter index: a vector index of the passages one filter keeps (400
-- here: one list, so even 1 probe reads them all and the answer is exact).
-- inf_search with an equal filter (any key order or spacing) reads it.
-- Two of the shards whose answer through the corpus's index was not exact:
SELECT min(s) AS fa, max(s) AS fb FROM through_index \gset
SELECT inf_filter_index('filtered', jsonb_build_object('shard', :fa)) AS fa_index \gset
SELECT :'fa_index' ~ '^passages_ivf_[0-9]+_[0-9a-f]{12}_f[0-9a-f]{10}$' AS named,
       inf_filter_index('filtered', format('{ "shard" :%s }', :fa)::jsonb) = :'fa_index' AS equal_filter_same_index;
SELECT inf_filter_index('filtered', jsonb_build_object('shard', :fb)) <> :'fa_index' AS other_filter_other_index;
SELECT c.name, f.filter = jsonb_build_object('shard', :fa) AS fa, f.filter = jsonb_build_object('shard', :fb) AS fb
FROM inf_ir.filter_indexes f JOIN inf_ir.corpora c USING (corpus_id) ORDER BY f.filter::text;
SET inf_ir.exact_filter_rows = 0;  -- without a filter index: the corpus's index, approximate at 1 probe
BEGIN;
SELECT filtered_top(:fa) = exact_filtered_top(:fa) AS filter_index_exact,
       filtered_top(:fb) = exact_filtered_top(:fb) AS other_filter_index_exact;
SELECT pg_stat_get_xact_numscans(('inf_ir.' || :'fa_index')::regclass) AS filter_index_scans;
COMMIT;
SELECT bool_and(filtered_top(s) = top) AS other_filters_still_through_the_corpus_index
FROM through_index WHERE s NOT IN (:fa, :fb);
-- Kept current: a new passage with the filter is found at once, one whose
-- metadata no longer matches is gone.
INSERT INTO inf_ir.passages(corpus_id, external_id, body, metadata, embedding, embedded_with)
SELECT c.corpus_id, 'new', 'the query itself', jsonb_build_object('shard', :fa), (SELECT v FROM fq), m.fingerprint
FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model WHERE c.name = 'filtered';
WITH second AS (SELECT (filtered_top(:fa))[2] AS id)
UPDATE inf_ir.passages p SET metadata = '{"shard": -1}' FROM second, inf_ir.corpora c
WHERE p.external_id = second.id AND p.corpus_id = c.corpus_id AND c.name = 'filtered';
SELECT (filtered_top(:fa))[1] AS best, filtered_top(:fa) = exact_filtered_top(:fa) AS exact_after_writes;
SELECT ok, rows_expected, rows_missing, wrong_entries FROM inf_index_check(('inf_ir.' || :'fa_index')::regclass);
-- inf_corpus_index keeps filter indexes (and makes missing ones).
DROP INDEX inf_ir.:"fa_index";
SELECT inf_corpus_index('filtered') LIKE 'passages_ivf_%' AS reindexed,
       to_regclass('inf_ir.' || :'fa_index') IS NOT NULL AS filter_index_made_again;
-- Bad input.
SELECT inf_filter_index('filtered', NULL);
SELECT inf_filter_index('filtered', '[1, 2]');
SELECT inf_filter_index('filtered', '{}');
SELECT inf_filter_index(NULL, '{"shard": 7}');
SELECT inf_filter_index('no such corpus', '{"shard": 7}');
SELECT inf_drop_filter_index('filtered', jsonb_build_object('shard', :fb)) AS dropped,
       inf_drop_filter_index('filtered', jsonb_build_object('shard', :fb)) AS again;
SELECT count(*) AS indexes_of_fb FROM pg_indexes
WHERE indexname LIKE 'passages_ivf_%_f' || left(md5(jsonb_build_object('shard', :fb)::text), 10);
RESET inf_ir.exact_filter_rows;
RESET inf_ir.probes;
SELECT inf_drop_corpus('filtered') AS dropped;
SELECT count(*) AS filter_indexes_left FROM inf_ir.filter_indexes;
SELECT count(*) AS vector_indexes_left FROM pg_indexes WHERE indexname LIKE :'fa_index' || '%';
SELECT count(*) AS metadata_indexes_left FROM pg_indexes WHERE indexname LIKE 'passages_metadata_%'
  AND indexname <> 'passages_metadata_' || (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'pets');

-- Vector form, and k larger than the corpus.
SELECT count(*) FROM inf_search_vector(inf_embed_query(NULL, 'fish'), 100, 'pets');
SELECT external_id FROM inf_search_vector(inf_embed_query(NULL, 'fish'), 1, 'pets');

-- Changes are seen at once: an UPDATE of the text makes the embedding stale
-- (reported, not silently dropped), a DELETE removes the row from results.
UPDATE inf_ir.passages SET body = 'Hamsters are nocturnal.' WHERE external_id = 'd5';
SELECT embedding IS NULL AS stale FROM inf_ir.passages WHERE external_id = 'd5';
SET client_min_messages = notice;
SELECT count(*) FROM inf_search(NULL, 'parrots', 10, 'pets');
SET client_min_messages = warning;
CALL inf_embed_corpus('pets');
DELETE FROM inf_ir.passages WHERE external_id = 'd3';
SELECT external_id FROM inf_search(NULL, 'goldfish', 5, 'pets') ORDER BY rank;

-- A rolled-back change leaves no trace in results.
BEGIN;
DELETE FROM inf_ir.passages WHERE external_id = 'd1';
SELECT count(*) AS inside_txn FROM inf_search(NULL, 'cats', 10, 'pets');
ROLLBACK;
SELECT count(*) AS after_rollback FROM inf_search(NULL, 'cats', 10, 'pets');

-- Re-ranking candidate ids (e.g. from full-text search).
SELECT rank, external_id FROM inf_rerank(NULL, 'sleeping cats',
  (SELECT array_agg(passage_id) FROM inf_ir.passages WHERE external_id IN ('d1', 'd2', 'd4')));
SELECT count(*) FROM inf_rerank(NULL, 'x', ARRAY[]::bigint[]);
SET client_min_messages = notice;
SELECT count(*) FROM inf_rerank(NULL, 'x', ARRAY[-1, NULL]::bigint[]);
SET client_min_messages = warning;
-- The same with a query vector embedded elsewhere (a sharded corpus's proxy):
-- equal ranks and scores.
SELECT a.rank, a.external_id, a.score = b.score AS same_score
FROM inf_rerank(NULL, 'sleeping cats',
       (SELECT array_agg(passage_id) FROM inf_ir.passages WHERE external_id IN ('d1', 'd2', 'd4'))) a
JOIN inf_rerank_vector(inf_embed_query(NULL, 'sleeping cats', 'minilm'),
       (SELECT array_agg(passage_id) FROM inf_ir.passages WHERE external_id IN ('d1', 'd2', 'd4')), 2) b
  USING (rank) ORDER BY rank;
SELECT * FROM inf_rerank_vector(NULL, ARRAY[1]::bigint[]);
SELECT * FROM inf_rerank_vector(array_fill('NaN'::real, ARRAY[384]), ARRAY[]::bigint[]);
SELECT * FROM inf_rerank_vector(ARRAY[1, 2, 3]::real[],
  (SELECT array_agg(passage_id) FROM inf_ir.passages WHERE external_id = 'd1'));

-- Right after a bulk load (statistics say the corpus has 10 rows; it has
-- 3,010) a search still reads the corpus's vector index, not every row
-- through the btree and a sort.
ALTER TABLE inf_ir.passages SET (autovacuum_enabled = off);
SELECT inf_create_corpus('bulk') > 0 AS created;
CREATE TEMP VIEW bulk_rows AS
SELECT c.corpus_id, 'b' || g AS external_id, 'bulk ' || g AS body, v.e AS embedding, m.fingerprint
FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model, generate_series(1, 3010) g,
     LATERAL (SELECT array_agg(random()::real) AS e FROM generate_series(1, 384) WHERE g > 0) v
WHERE c.name = 'bulk';
INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with)
SELECT * FROM bulk_rows LIMIT 10;
SELECT inf_corpus_index('bulk') AS bulk_index \gset
INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with)
SELECT * FROM bulk_rows OFFSET 10;
BEGIN;
SELECT count(*) FROM inf_search_vector(inf_embed_query(NULL, 'anything'), 5, 'bulk');
SELECT pg_stat_get_xact_numscans(('inf_ir.' || :'bulk_index')::regclass) AS vector_index_scans;
COMMIT;
SELECT inf_drop_corpus('bulk');
ALTER TABLE inf_ir.passages RESET (autovacuum_enabled);

-- An UPDATE of the text that brings the new text's embedding keeps it
-- (how put_embedded_passages replaces a passage on a shard).
SELECT inf_create_corpus('kept') > 0 AS created;
INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with)
SELECT c.corpus_id, 'k1', 'Hamsters are nocturnal.', inf_embed('Hamsters are nocturnal.'), m.fingerprint
FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model WHERE c.name = 'kept';
UPDATE inf_ir.passages p SET body = 'Hamsters are nocturnal rodents.',
       embedding = inf_embed('Hamsters are nocturnal rodents.')
FROM inf_ir.corpora c WHERE c.corpus_id = p.corpus_id AND c.name = 'kept';
SELECT embedding IS NOT NULL AND embedded_with IS NOT NULL AS kept
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'kept';
UPDATE inf_ir.passages p SET body = 'Hamsters sleep by day.'
FROM inf_ir.corpora c WHERE c.corpus_id = p.corpus_id AND c.name = 'kept';
SELECT embedding IS NULL AND embedded_with IS NULL AS stale
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'kept';
SELECT inf_drop_corpus('kept');

-- Bad input: clear ERRORs, the session goes on.
SELECT * FROM inf_search(NULL, 'q', 0, 'pets');
SELECT * FROM inf_search(NULL, 'q', 1000000, 'pets');
SELECT * FROM inf_search(NULL, 'q', NULL, 'pets');
-- An untyped third argument (a driver's bind parameter, a quoted number) is k.
SELECT count(*) AS rows FROM inf_search(NULL, 'how long do cats sleep', '2', 'pets');
SELECT * FROM inf_search(NULL, NULL, 5, 'pets');
SELECT * FROM inf_search(NULL, 'q', 5, 'nope');
SELECT * FROM inf_search_vector(ARRAY[1, 2, 3]::real[], 5, 'pets');
SELECT * FROM inf_search_vector(NULL, 5, 'pets');
SELECT * FROM inf_search_vector(array_fill('NaN'::real, ARRAY[384]), 5, 'pets');
CALL inf_embed_corpus('nope');
CALL inf_embed_corpus('pets', 0);
SELECT inf_create_corpus('pets');
SELECT inf_create_corpus('other', 'nope');
SELECT inf_create_corpus('empty') > 0 AS created;
SET client_min_messages = notice;
SELECT count(*) FROM inf_search(NULL, 'q', 5, 'empty');
SET client_min_messages = warning;

-- JSONL loading: whole file or nothing; server files need privileges.
\! printf '{"_id": "a", "title": "T", "text": "first"}\n{"_id": 2, "text": "second", "metadata": {"lang": "en"}}\n' > /tmp/inf_ir_fixtures/ok.jsonl
\! printf '{"_id": "a", "text": "fine"}\n{"_id": "b", "text": }\n' > /tmp/inf_ir_fixtures/bad.jsonl
SELECT * FROM inf_load_jsonl('loaded', '/tmp/inf_ir_fixtures/ok.jsonl');
SELECT * FROM inf_load_jsonl('loaded', '/tmp/inf_ir_fixtures/ok.jsonl');
SELECT external_id, title, body, metadata FROM inf_ir.passages JOIN inf_ir.corpora USING (corpus_id)
WHERE name = 'loaded' ORDER BY external_id;
SELECT * FROM inf_load_jsonl('loaded', '/tmp/inf_ir_fixtures/bad.jsonl');
SELECT * FROM inf_load_jsonl('loaded', '/tmp/inf_ir_fixtures/missing.jsonl');
SELECT count(*) FROM inf_ir.passages JOIN inf_ir.corpora USING (corpus_id) WHERE name = 'loaded';
CREATE ROLE inf_ir_reader LOGIN;
SET ROLE inf_ir_reader;
SELECT * FROM inf_load_jsonl('loaded', '/etc/passwd');
SELECT count(*) > 0 AS can_search FROM inf_search(NULL, 'cats', 2, 'pets');
RESET ROLE;
DROP ROLE inf_ir_reader;

SELECT inf_drop_corpus('loaded'), inf_drop_corpus('loaded');
SELECT inf_drop_corpus('empty'), inf_drop_corpus('pets');
