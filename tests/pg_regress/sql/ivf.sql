-- The inf_ivf index access method and the <=> operator on plain real[] tables
-- (no model needed): exactness at full probing, iterative scans under filters,
-- writes seen at once, VACUUM, the check function, and bad input.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;

-- The operator: 1 - cosine similarity; bad vectors are ERRORs.
SELECT round((ARRAY[1, 0]::real[] <=> ARRAY[0, 1]::real[])::numeric, 6) AS orthogonal,
       (ARRAY[1, 2]::real[] <=> ARRAY[2, 4]::real[]) < 1e-6 AS same_direction,
       round((ARRAY[1, 0]::real[] <=> ARRAY[-1, 0]::real[])::numeric, 6) AS opposite;
SELECT ARRAY[1, 2]::real[] <=> ARRAY[1, 2, 3]::real[];
SELECT ARRAY[1, 'NaN']::real[] <=> ARRAY[1, 2]::real[];
SELECT ARRAY['Infinity', 1]::real[] <=> ARRAY[1, 2]::real[];
SELECT ARRAY[0, 0]::real[] <=> ARRAY[1, 2]::real[];
SELECT ARRAY[1, NULL]::real[] <=> ARRAY[1, 2]::real[];
SELECT (NULL::real[] <=> ARRAY[1, 2]::real[]) IS NULL AS null_gives_null;
-- At the ends of float32's range the distance is still exact (the squares
-- overflow or vanish in float32); a 2-D array is refused, as the index does.
SELECT ARRAY[3e38, 3e38]::real[] <=> ARRAY[1, 1]::real[] AS huge_same_direction,
       ARRAY[1e-30, 1e-30]::real[] <=> ARRAY[1e-30, 1e-30]::real[] AS tiny_same_direction,
       ARRAY[3.4e38, 0]::real[] <=> ARRAY[-3.4e38, 0]::real[] AS huge_opposite;
SELECT ARRAY[[1, 2], [3, 4]]::real[] <=> ARRAY[1, 2, 3, 4]::real[];

-- 3,000 deterministic 8-d vectors; 1 row in 100 is 'rare'.
CREATE TABLE ivf_t (id int PRIMARY KEY, v real[], tag text, meta jsonb);
INSERT INTO ivf_t
SELECT i, ARRAY[sin(i), cos(i), sin(2 * i), cos(3 * i), sin(5 * i), cos(7 * i), sin(11 * i), cos(13 * i)]::real[],
       CASE WHEN i % 100 = 0 THEN 'rare' ELSE 'common' END,
       jsonb_build_object('lang', CASE WHEN i % 100 = 0 THEN 'de' ELSE 'en' END)
FROM generate_series(1, 3000) i;
CREATE INDEX ivf_t_v ON ivf_t USING inf_ivf (v) WITH (lists = 30);
SELECT lists, dimension, trained_rows FROM inf_index_info('ivf_t_v');
SELECT ok, entries, rows_expected, rows_missing, wrong_entries FROM inf_index_check('ivf_t_v');
CREATE TEMP TABLE q AS SELECT ARRAY[0.3, 0.1, -0.5, 0.2, 0.9, -0.1, 0.4, 0.0]::real[] AS v;
CREATE FUNCTION ivf_top(n int) RETURNS int[] LANGUAGE sql AS
  $$ SELECT array_agg(id) FROM (SELECT id FROM ivf_t ORDER BY v <=> (SELECT v FROM q) LIMIT n) s $$;
CREATE FUNCTION exact_top(n int, only_tag text DEFAULT NULL) RETURNS int[] LANGUAGE sql AS
  $$ SELECT array_agg(id) FROM (SELECT id FROM ivf_t WHERE only_tag IS NULL OR tag = only_tag
                                ORDER BY inf_cosine_distance(v, (SELECT v FROM q)), id LIMIT n) s $$;

-- ORDER BY <=> LIMIT uses the index.
EXPLAIN (COSTS OFF) SELECT id FROM ivf_t ORDER BY v <=> ARRAY[1, 0, 0, 0, 0, 0, 0, 0]::real[] LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM ivf_t WHERE tag = 'rare' ORDER BY v <=> (SELECT v FROM q) LIMIT 10;
-- Probing every list is exact; a few lists give most of the true top 10.
SET inf_ir.probes = 30;
SELECT ivf_top(10) = exact_top(10) AS exact_at_all_lists;
SET inf_ir.probes = 3;
SELECT cardinality(ARRAY(SELECT unnest(ivf_top(10)) INTERSECT SELECT unnest(exact_top(10)))) >= 7 AS recall_at_3_lists;

-- A selective filter still gets k rows: the scan goes on to further lists.
SET inf_ir.probes = 1;
SELECT count(*) AS rare_rows
FROM (SELECT id FROM ivf_t WHERE tag = 'rare' ORDER BY v <=> (SELECT v FROM q) LIMIT 10) s;
SELECT count(*) AS de_rows
FROM (SELECT id FROM ivf_t WHERE meta @> '{"lang": "de"}' ORDER BY v <=> (SELECT v FROM q) LIMIT 10) s;
SET inf_ir.probes = 30;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM ivf_t WHERE tag = 'rare' ORDER BY v <=> (SELECT v FROM q) LIMIT 10) s)
       = exact_top(10, 'rare') AS filtered_exact_at_all_lists;

-- Writes are seen by the next statement; a rollback leaves no trace.
INSERT INTO ivf_t VALUES (5001, (SELECT v FROM q), 'new', '{}');
SELECT ivf_top(1) AS nearest_after_insert;
UPDATE ivf_t SET v = ARRAY[-0.3, -0.1, 0.5, -0.2, -0.9, 0.1, -0.4, 0.0]::real[] WHERE id = 5001;
SELECT 5001 = ANY (ivf_top(10)) AS still_near_after_update;
BEGIN;
UPDATE ivf_t SET v = (SELECT v FROM q) WHERE id = 5001;
SELECT ivf_top(1) AS nearest_inside_transaction;
ROLLBACK;
SELECT 5001 = ANY (ivf_top(10)) AS near_after_rollback;
DELETE FROM ivf_t WHERE id = 5001;
SELECT ivf_top(10) = exact_top(10) AS exact_after_delete;

-- VACUUM removes dead entries and their space is reused.
SELECT pages AS pages_before FROM inf_index_info('ivf_t_v') \gset
DELETE FROM ivf_t WHERE id % 2 = 0;
VACUUM ivf_t;
SELECT ok, entries, dead_entries, rows_missing FROM inf_index_check('ivf_t_v');
SELECT ivf_top(10) = exact_top(10) AS exact_after_vacuum;
INSERT INTO ivf_t
SELECT i + 10000, ARRAY[sin(i), cos(i), sin(2 * i), cos(3 * i), sin(5 * i), cos(7 * i), sin(11 * i), cos(13 * i)]::real[], 'again', '{}'
FROM generate_series(2, 3000, 2) i;
SELECT pages <= :pages_before + 1 AS space_reused FROM inf_index_info('ivf_t_v');
SELECT ok, entries FROM inf_index_check('ivf_t_v');

-- REINDEX retrains; the index stays exact at all lists.
REINDEX INDEX ivf_t_v;
SELECT lists, trained_rows FROM inf_index_info('ivf_t_v');
SELECT ivf_top(10) = exact_top(10) AS exact_after_reindex;

-- Bad rows and queries: clear ERRORs, nothing stored.
INSERT INTO ivf_t VALUES (6000, ARRAY[1, 2, 3]::real[], 'bad', '{}');
INSERT INTO ivf_t VALUES (6001, ARRAY[1, 'NaN', 0, 0, 0, 0, 0, 0]::real[], 'bad', '{}');
INSERT INTO ivf_t VALUES (6002, ARRAY[0, 0, 0, 0, 0, 0, 0, 0]::real[], 'bad', '{}');
INSERT INTO ivf_t VALUES (6003, ARRAY[1, NULL, 0, 0, 0, 0, 0, 0]::real[], 'bad', '{}');
INSERT INTO ivf_t VALUES (6004, NULL, 'no vector', '{}');
SELECT count(*) AS stored_bad FROM ivf_t WHERE tag = 'bad';
SELECT id FROM ivf_t ORDER BY v <=> ARRAY[1, 2]::real[] LIMIT 1;
SELECT id FROM ivf_t ORDER BY v <=> ARRAY[1, 'NaN', 0, 0, 0, 0, 0, 0]::real[] LIMIT 1;
SELECT count(*) AS rows_for_a_null_query FROM (SELECT id FROM ivf_t ORDER BY v <=> NULL::real[] LIMIT 2) s;
CREATE INDEX ON ivf_t USING inf_ivf ((v || ARRAY[1]::real[]));
CREATE INDEX ON ivf_t USING inf_ivf (v) WITH (lists = -1);
SELECT * FROM inf_index_info('ivf_t_pkey');
SELECT * FROM inf_index_check('ivf_t_pkey');

-- An index built on no rows takes its dimension and first list from its
-- first row, and grows from there.
CREATE TABLE ivf_e (id serial, v real[]);
CREATE INDEX ivf_e_v ON ivf_e USING inf_ivf (v);
SELECT lists, dimension FROM inf_index_info('ivf_e_v');
SELECT count(*) FROM (SELECT id FROM ivf_e ORDER BY v <=> ARRAY[1, 2]::real[] LIMIT 3) s;
INSERT INTO ivf_e(v) SELECT ARRAY[cos(i), sin(i)]::real[] FROM generate_series(1, 500) i;
SELECT lists, dimension FROM inf_index_info('ivf_e_v');
SELECT ok, entries FROM inf_index_check('ivf_e_v');
SELECT id FROM ivf_e ORDER BY v <=> ARRAY[cos(7), sin(7)]::real[] LIMIT 1;

DROP TABLE ivf_t, ivf_e;
DROP FUNCTION ivf_top(int), exact_top(int, text);

-- Rows whose vector is NULL are not in the index (as in pgvector): an
-- ORDER BY <=> LIMIT answered by the index returns only rows with a vector;
-- a sequential scan returns the NULLs last. Both agree with WHERE v IS NOT NULL.
CREATE TABLE ivf_nulls (id int, v real[]);
INSERT INTO ivf_nulls SELECT i, CASE WHEN i % 4 = 0 THEN NULL ELSE ARRAY[sin(i), cos(i)]::real[] END
FROM generate_series(1, 40) i;
CREATE INDEX ivf_nulls_v ON ivf_nulls USING inf_ivf (v) WITH (lists = 2);
SET inf_ir.probes = 2;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM ivf_nulls ORDER BY v <=> ARRAY[1, 0]::real[] LIMIT 100;
SELECT count(*) AS through_the_index FROM (SELECT id FROM ivf_nulls ORDER BY v <=> ARRAY[1, 0]::real[] LIMIT 100) s;
RESET enable_seqscan;
SET enable_indexscan = off;
SELECT count(*) AS sequential, count(v) AS with_a_vector
FROM (SELECT id, v FROM ivf_nulls ORDER BY v <=> ARRAY[1, 0]::real[] LIMIT 100) s;
RESET enable_indexscan;
DROP TABLE ivf_nulls;
