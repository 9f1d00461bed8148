-- The InF-IR dataset: tuples and constraints, validation, import/export,
-- seed import, metrics, p-MRR, diversity.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;

-- A positive, then its instruction- and query-negatives.
SELECT inf_add_positive('only answers about felines', 'how long do cats sleep',
                        'Cats sleep for twelve to sixteen hours a day.', 'test', 'hand') AS g1 \gset
SELECT inf_add_positive('only answers about felines', 'how long do cats sleep',
                        'Cats sleep for twelve to sixteen hours a day.', 'test', 'hand') = :g1 AS same_group_again;
SELECT inf_add_negative(:g1, 'instruction', 'only answers about dogs',
                        'Dogs sleep about twelve hours a day.', 'test', 'hand');
SELECT inf_add_negative(:g1, 'query', 'how long do cats live',
                        'Indoor cats often live fifteen years or more.', 'test', 'hand');
SELECT query_positive, instruction_negative, query_negative, status FROM inf_ir.inf_ir_rows WHERE group_id = :g1;

-- Bad rows are impossible.
SELECT inf_add_negative(999999, 'query', 'x', 'y');
SELECT inf_add_negative(:g1, 'instruction', 'only answers about felines', 'z');
SELECT inf_add_negative(:g1, 'passage', 'x', 'y');
SELECT inf_add_positive('  ', 'q', 'p');
INSERT INTO inf_ir.tuple_negatives(group_id, kind, altered, passage, source, generator)
VALUES (999999, 'query', 'x', 'y', 's', 'g');
UPDATE inf_ir.tuple_groups SET status = 'maybe' WHERE group_id = :g1;

-- A second, deliberately ambiguous group: its negatives fit the positive pair too.
SELECT inf_add_positive('about the capital', 'paris facts', 'Paris is the capital of France.', 'test', 'hand') AS g2 \gset
SELECT inf_add_negative(:g2, 'instruction', 'about its museums', 'Paris is the capital of France and a city.', 'test', 'hand');
SELECT inf_add_negative(:g2, 'query', 'paris information', 'Paris is the capital of France, in Europe.', 'test', 'hand');

-- Validation with the bi-encoder: every score is stored.
SELECT * FROM inf_validate_tuples(margin => 0.0);
SELECT group_id = :g1 AS is_g1, evaluator, pos_pos > ineg_pos AS a, pos_pos > qneg_pos AS b,
       ineg_own > ineg_pos AS c, qneg_own > qneg_pos AS d
FROM inf_ir.validation_scores ORDER BY group_id;
SELECT group_id = :g1 AS is_g1, status FROM inf_ir.tuple_groups ORDER BY group_id;
-- Other margins re-applied from stored scores, without embedding again
-- (MiniLM is not instruction-tuned: at margin 0 it fails both groups).
SELECT * FROM inf_apply_validation(-1.0);
SELECT * FROM inf_apply_validation(2.0);
SELECT * FROM inf_apply_validation(0.0);
SELECT * FROM inf_apply_validation(NULL);

-- Export in the released layout, and training triples.
SELECT * FROM inf_export_tuples_jsonl() ;
SELECT group_id = :g1 AS is_g1, anchor, positive, negative_1, negative_2 FROM inf_export_training_triples(NULL);

-- JSONL import: idempotent, whole file or nothing, line numbers in errors.
\! printf '%s\n' '{"query_positive":"q1","instruction_positive":"i1","document_positive":"p1","query_negative":"q1x","instruction_negative":"i1x","hard_negative_document_1":"n1","hard_negative_document_2":"n2"}' '{"query_positive":"q2","instruction_positive":"i2","document_positive":"p2","query_negative":null,"instruction_negative":null,"hard_negative_document_1":null,"hard_negative_document_2":null}' > /tmp/inf_ir_fixtures/rows.jsonl
\! printf '%s\n' '{"query_positive":"q3","instruction_positive":"i3","document_positive":"p3","query_negative":"a","instruction_negative":"b","hard_negative_document_1":"c","hard_negative_document_2":"d"}' '{"query_positive":"q4", "instruction_positive": }' > /tmp/inf_ir_fixtures/rows_bad.jsonl
\! printf '%s\n' '{"query_positive":"q5","instruction_positive":"i5","document_positive":"p5","query_negative":"q5x","instruction_negative":"i5x","hard_negative_document_1":null,"hard_negative_document_2":"n"}' > /tmp/inf_ir_fixtures/rows_half.jsonl
SELECT * FROM inf_import_tuples_jsonl('/tmp/inf_ir_fixtures/rows.jsonl', 'fixture', 'hand');
SELECT * FROM inf_import_tuples_jsonl('/tmp/inf_ir_fixtures/rows.jsonl', 'fixture', 'hand');
SELECT * FROM inf_import_tuples_jsonl('/tmp/inf_ir_fixtures/rows_bad.jsonl');
SELECT * FROM inf_import_tuples_jsonl('/tmp/inf_ir_fixtures/rows_half.jsonl');
SELECT count(*) AS groups_after_failed_imports FROM inf_ir.tuple_groups;

-- Seed import from files, idempotent; positives from instructions.
\! printf '%s\n' '{"_id": "1", "text": "what is a cat"}' '{"_id": 2, "text": "define dog", "metadata": {"query_type": "DESCRIPTION"}}' > /tmp/inf_ir_fixtures/seed_queries.jsonl
\! printf '%s\n' '{"_id": "p1", "text": "A cat is a small feline."}' '{"_id": "p2", "text": "A dog is a domesticated canine."}' > /tmp/inf_ir_fixtures/seed_passages.jsonl
\! printf 'qid\tpid\tscore\n1\tp1\t1\n2\tp2\t1\n' > /tmp/inf_ir_fixtures/seed_qrels.tsv
\! printf '%s\n' '{"_id": "1_1", "text": "answer for a child", "metadata": {"origin_query": "1"}}' '{"_id": "2_1", "text": "mention breeds", "metadata": {"origin_query": "2"}}' '{"_id": "9_1", "text": "orphan", "metadata": {"origin_query": "9"}}' > /tmp/inf_ir_fixtures/seed_instructions.jsonl
SELECT * FROM inf_import_seed('/tmp/inf_ir_fixtures/seed_queries.jsonl', '/tmp/inf_ir_fixtures/seed_passages.jsonl', '/tmp/inf_ir_fixtures/seed_qrels.tsv');
SELECT * FROM inf_import_seed('/tmp/inf_ir_fixtures/seed_queries.jsonl', '/tmp/inf_ir_fixtures/seed_passages.jsonl', '/tmp/inf_ir_fixtures/seed_qrels.tsv');
SELECT * FROM inf_form_positives('/tmp/inf_ir_fixtures/seed_instructions.jsonl', 'fixture', 'hand');
SELECT * FROM inf_form_positives('/tmp/inf_ir_fixtures/seed_instructions.jsonl', 'fixture', 'hand');
SELECT seed_query_id, query, instruction, passage FROM inf_ir.tuple_groups WHERE seed_query_id IS NOT NULL ORDER BY 1;
SELECT * FROM inf_import_seed('/tmp/inf_ir_fixtures/seed_queries.jsonl', '/tmp/inf_ir_fixtures/rows_bad.jsonl', '/tmp/inf_ir_fixtures/seed_qrels.tsv');

-- Non-superusers cannot make the server read files.
CREATE ROLE inf_ir_curator LOGIN;
SET ROLE inf_ir_curator;
SELECT * FROM inf_import_tuples_jsonl('/etc/passwd');
SELECT * FROM inf_import_seed('/etc/passwd', '/etc/passwd', '/etc/passwd');
SELECT * FROM inf_form_positives('/etc/passwd');
RESET ROLE;
DROP ROLE inf_ir_curator;

-- Metrics on a hand-made run (values worked by hand in src/engine/metrics.rs tests).
INSERT INTO inf_ir.eval_qrels VALUES ('hand', 'q', 'a', 2), ('hand', 'q', 'b', 1), ('hand', 'q', 'c', 0), ('hand', 'q', 'z', 1);
INSERT INTO inf_ir.eval_runs VALUES ('r', 'q', 'c', 0.9, 1), ('r', 'q', 'a', 0.8, 2), ('r', 'q', 'x', 0.7, 3), ('r', 'q', 'b', 0.6, 4);
SELECT metric, round(value::numeric, 6) AS value, n_queries FROM inf_evaluate('r', 'hand', 3);
SELECT query_id, round(ndcg::numeric, 6), round(mrr::numeric, 6), round(recall::numeric, 6), round(ap::numeric, 6)
FROM inf_evaluate_per_query('r', 'hand', 4);
SELECT * FROM inf_evaluate('nope', 'hand');
SELECT * FROM inf_evaluate('r', 'hand', 0);

-- p-MRR: d1 moves 1 -> 4 (+0.75), d4 moves 4 -> 2 (-0.5): mean 0.125.
INSERT INTO inf_ir.eval_runs VALUES ('og', 'q', 'd1', 4, 1), ('og', 'q', 'd2', 3, 2), ('og', 'q', 'd3', 2, 3), ('og', 'q', 'd4', 1, 4),
  ('new', 'q', 'd2', 4, 1), ('new', 'q', 'd4', 3, 2), ('new', 'q', 'd3', 2, 3), ('new', 'q', 'd1', 1, 4);
INSERT INTO inf_ir.eval_qrels VALUES ('changed', 'q', 'd1', 1), ('changed', 'q', 'd4', 1);
SELECT inf_p_mrr('og', 'new', 'changed') AS p_mrr;

-- Diversity: INGF by hand (1/6), APS of identical texts is 1.
SELECT round(inf_ingf(ARRAY['The cat', 'the DOG', 'a bird'], 1)::numeric, 6) AS ingf_unigrams,
       inf_ingf(ARRAY['same words', 'same words'], 2) AS ingf_same,
       inf_ingf(ARRAY['only one'], 2) AS ingf_single;
SELECT round(aps::numeric, 5) AS aps, n, embedded, exact, error_bound FROM inf_aps(ARRAY['same', 'same', 'same']);
SELECT aps < 0.9 AS diverse, n, embedded, exact, error_bound > 0 AS has_bound
FROM inf_aps(ARRAY['cats', 'dogs', 'tax law', 'rust iterators', 'paris', 'opera'], max_exact => 4);
SELECT * FROM inf_aps(ARRAY['a'], side => 'sideways');
