-- Corpora that follow a table: inf_create_corpus(..., source => ...), the
-- triggers that keep passages in step, the queue, search over the
-- application's rows, and every refusal.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;

CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, lang text, tenant int, views int NOT NULL DEFAULT 0);
INSERT INTO docs VALUES
  (1, 'Cats', 'Cats sleep for twelve to sixteen hours a day.', 'en', 1),
  (2, NULL, 'Dogs need a daily walk and regular exercise.', 'en', 1),
  (3, 'Fische', 'Goldfische leben mehr als zehn Jahre.', 'de', 2),
  (4, NULL, NULL, 'en', 1);  -- no text: no passage

-- Refusals, each with the fix in its hint.
\set VERBOSITY default
SELECT inf_create_corpus('x', source => 'nosuch', text => ARRAY['body']);
CREATE VIEW docs_view AS SELECT * FROM docs;
SELECT inf_create_corpus('x', source => 'docs_view', text => ARRAY['body']);
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['nosuch']);
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['views']);
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['body'], metadata => ARRAY['nosuch']);
SELECT inf_create_corpus('x', source => 'docs');
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['body', 'body']);
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['body'], metadata => ARRAY['body']);
SELECT inf_create_corpus('x', source => 'docs', id => ARRAY['tenant'], text => ARRAY['body']);
SELECT inf_create_corpus('x', source => 'docs', id => ARRAY['views'], text => ARRAY['body']);
SELECT inf_create_corpus('x', text => ARRAY['body']);
SELECT inf_alter_corpus('nosuch', background => true);
SELECT inf_create_corpus('plain') > 0 AS plain_created;
SELECT inf_alter_corpus('plain', background => false);
SELECT inf_alter_corpus('plain', model => 'minilm');
SELECT inf_create_corpus('.next-1');
SELECT inf_drop_corpus('plain');
CREATE TABLE nokey (body text);
SELECT inf_create_corpus('x', source => 'nokey', text => ARRAY['body']);
CREATE ROLE inf_ir_outsider;
SET ROLE inf_ir_outsider;
SELECT inf_create_corpus('x', source => 'docs', text => ARRAY['body']);
RESET ROLE;
\set VERBOSITY terse
SELECT count(*) AS no_corpus_left FROM inf_ir.corpora WHERE name = 'x';

-- Existing rows are queued (backfill). The background embedder (on a
-- server with inf_ir preloaded) is turned off here, in the same
-- transaction, so that this file sees the queue; CALL inf_embed_corpus
-- drains it in the foreground.
BEGIN;
SET LOCAL client_min_messages = warning;
SELECT inf_create_corpus('docs', source => 'docs', text => ARRAY['title', 'body'],
                         metadata => ARRAY['lang', 'tenant']) > 0 AS created;
SELECT inf_alter_corpus('docs', background => false);
COMMIT;
SELECT corpus, background, queued, passages, rows_embedded FROM inf_ir.source_progress;
SELECT source, source_key, source_text, source_metadata, source_owner FROM inf_ir.corpora WHERE name = 'docs';
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
SET client_min_messages = warning;
CALL inf_embed_corpus('docs', 2);
RESET client_min_messages;
SELECT count(*) AS queued FROM inf_ir.source_changes;
SELECT corpus, background, queued, lag, passages FROM inf_ir.source_progress WHERE corpus = 'docs';
SELECT external_id, title, body, metadata, embedded_with = (SELECT fingerprint FROM inf_ir.models m JOIN inf_ir.corpora c ON c.model = m.name WHERE c.name = 'docs') AS current
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs' ORDER BY external_id;
-- The passage's vector is the text's vector (title and body joined by a space).
SELECT (SELECT sum(x::float8 * y::float8) FROM unnest(p.embedding, inf_embed('Cats Cats sleep for twelve to sixteen hours a day.')) t(x, y)) > 0.99999 AS same_vector
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs' AND external_id = '1';

-- Search returns the application's key: join back to the rows.
SELECT d.id, d.title, s.rank
FROM inf_search(NULL, 'how long do cats sleep', 2, 'docs') s JOIN docs d ON d.id = s.external_id::bigint
ORDER BY s.rank;
SELECT d.id FROM inf_search(NULL, 'pets', 5, 'docs', filter => '{"lang": "de"}') s JOIN docs d ON d.id = s.external_id::bigint;

-- Metadata and unrelated columns: applied at once, nothing queued or re-embedded.
CREATE TEMP TABLE vectors_before AS
SELECT external_id, embedding FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs';
UPDATE docs SET lang = 'fr' WHERE id = 1;
UPDATE docs SET views = views + 1;
SELECT count(*) AS queued FROM inf_ir.source_changes;
SELECT d.id FROM inf_search(NULL, 'pets', 5, 'docs', filter => '{"lang": "fr"}') s JOIN docs d ON d.id = s.external_id::bigint;
SELECT count(*) AS unchanged_vectors FROM inf_ir.passages p JOIN vectors_before b USING (external_id)
WHERE p.corpus_id = (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'docs') AND p.embedding = b.embedding;

-- Text changes are queued; the old vector serves until the new one is made.
UPDATE docs SET body = 'Cats are lazy animals.' WHERE id = 1;
UPDATE docs SET title = 'Hunde' WHERE id = 2;
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
SET client_min_messages = warning;
CALL inf_embed_corpus('docs');
RESET client_min_messages;
SELECT external_id, body FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs' ORDER BY 1;

-- Deleted rows: gone from search in the deleting transaction; back after a rollback.
BEGIN;
DELETE FROM docs WHERE id = 2;
SELECT external_id FROM inf_search(NULL, 'dogs', 5, 'docs') ORDER BY 1;
ROLLBACK;
SELECT external_id FROM inf_search(NULL, 'dogs', 5, 'docs') ORDER BY 1;
-- A row inserted and rolled back never reaches the queue.
BEGIN;
INSERT INTO docs VALUES (9, NULL, 'Parrots can learn to talk.', 'en', 1);
ROLLBACK;
SELECT count(*) AS queued FROM inf_ir.source_changes;
-- A passage whose source row this snapshot cannot see is not returned,
-- even before its passage is removed (here: removed by hand, the trigger
-- disabled, to leave a stale passage).
DO $$ BEGIN EXECUTE format('ALTER TABLE docs DISABLE TRIGGER inf_ir_corpus_%s_delete', (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'docs')); END $$;
DELETE FROM docs WHERE id = 3;
DO $$ BEGIN EXECUTE format('ALTER TABLE docs ENABLE TRIGGER inf_ir_corpus_%s_delete', (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'docs')); END $$;
SELECT count(*) AS stale_passages FROM inf_ir.passages WHERE external_id = '3' AND corpus_id = (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'docs');
SELECT external_id FROM inf_search(NULL, 'goldfish', 5, 'docs') ORDER BY 1;
-- A key change is a delete and an insert.
UPDATE docs SET id = 20 WHERE id = 2;
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
INSERT INTO docs VALUES (3, NULL, 'Goldfish live long in a good tank.', 'en', 2);
SET client_min_messages = warning;
CALL inf_embed_corpus('docs');
RESET client_min_messages;
SELECT external_id, body, metadata FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs' ORDER BY 1;

-- A renamed column is followed; a column or table the corpus reads cannot be dropped.
ALTER TABLE docs RENAME COLUMN body TO content;
UPDATE docs SET content = 'Cats nap all day.' WHERE id = 1;
SELECT key FROM inf_ir.source_changes;
ALTER TABLE docs DROP COLUMN content;
DROP TABLE docs;
-- A one-column bigint key: INSERT fires the row-level C trigger (a
-- composite key keeps the statement-level one, below). A renamed key
-- column is followed there too.
SELECT t.tgname ~ '_insert$' AS insert_trigger, (t.tgtype & 1) = 1 AS for_each_row, t.tgfoid::regprocedure AS function
FROM pg_trigger t JOIN inf_ir.corpora c ON t.tgrelid = c.source
WHERE c.name = 'docs' AND t.tgname ~ '_insert$';
BEGIN;
ALTER TABLE docs RENAME COLUMN id TO doc_id;
INSERT INTO docs (doc_id, content, lang) VALUES (31, 'Owls hunt at night.', 'en'), (32, '', 'en');
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
ROLLBACK;
-- The trigger queues rows of its corpus's own source only, and only AFTER
-- INSERT FOR EACH ROW.
CREATE TABLE not_a_source (id bigint PRIMARY KEY, body text);
DO $$ BEGIN EXECUTE format('CREATE TRIGGER borrowed AFTER INSERT ON not_a_source FOR EACH ROW EXECUTE FUNCTION inf_ir.source_row_inserted(%L, %L)',
                           (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'docs'), 1); END $$;
DO $$ BEGIN INSERT INTO not_a_source VALUES (1, 'x');
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% (%)', regexp_replace(SQLERRM, '[0-9]+$', 'N'), SQLSTATE; END $$;
DROP TRIGGER borrowed ON not_a_source;
CREATE TRIGGER borrowed_wrongly BEFORE INSERT ON not_a_source FOR EACH ROW EXECUTE FUNCTION inf_ir.source_row_inserted('1', '1');
INSERT INTO not_a_source VALUES (1, 'x');
DROP TABLE not_a_source;
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
-- The application's role needs no rights on inf_ir: the trigger reads its
-- corpus as inf_ir's owner (a new session, so nothing is cached yet).
CREATE ROLE inf_ir_app;
GRANT INSERT ON docs TO inf_ir_app;
REVOKE USAGE ON SCHEMA inf_ir FROM PUBLIC;
\c -
BEGIN;
SET LOCAL ROLE inf_ir_app;
INSERT INTO docs (id, content, lang) VALUES (33, 'Bats sleep upside down.', 'en');
RESET ROLE;
SELECT key FROM inf_ir.source_changes ORDER BY change_id;
ROLLBACK;
GRANT USAGE ON SCHEMA inf_ir TO PUBLIC;
REVOKE ALL ON docs FROM inf_ir_app;
DROP ROLE inf_ir_app;

-- A role without SELECT on the source sees nothing of it through search.
CREATE ROLE inf_ir_reader;
SET ROLE inf_ir_reader;
SELECT external_id FROM inf_search(NULL, 'cats', 2, 'docs');
RESET ROLE;
-- Nor through the functions that read the table as the corpus's owner.
SELECT has_function_privilege('inf_ir_reader', format('inf_ir.corpus_%s_read(text[])', corpus_id), 'EXECUTE') AS reader_may_read_as_owner,
       has_function_privilege('inf_ir_reader', format('inf_ir.corpus_%s_present(text[])', corpus_id), 'EXECUTE') AS reader_may_check_keys
FROM inf_ir.corpora WHERE name = 'docs';
GRANT SELECT ON docs TO inf_ir_reader;
SET ROLE inf_ir_reader;
SELECT count(*) AS visible FROM inf_search(NULL, 'cats', 2, 'docs');
RESET ROLE;

-- Composite and text keys.
CREATE TABLE notes (tenant int, slug text, note text, PRIMARY KEY (tenant, slug));
INSERT INTO notes VALUES (1, 'a', 'Tea is brewed from leaves.'), (2, 'a', 'Coffee is brewed from beans.'), (2, 'it''s', 'Water boils at 100 degrees.');
BEGIN;
SET LOCAL client_min_messages = warning;
SELECT inf_create_corpus('notes', source => 'notes', text => ARRAY['note']) > 0 AS created;
SELECT inf_alter_corpus('notes', background => false);
COMMIT;
SET client_min_messages = warning;
CALL inf_embed_corpus('notes');
RESET client_min_messages;
SELECT n.tenant, n.slug, s.rank
FROM inf_search(NULL, 'coffee beans', 3, 'notes') s
JOIN notes n ON (n.tenant, n.slug) = ((s.external_id::jsonb ->> 0)::int, s.external_id::jsonb ->> 1)
ORDER BY s.rank;
-- A model switch: to a decoder embedder of another dimension.
SELECT name, dimension FROM inf_register_model('src_dec', '/tmp/inf_ir_fixtures/decoder_optimum', pooling => 'last', max_tokens => 512);
SET client_min_messages = warning;
SELECT inf_alter_corpus('notes', model => 'src_dec');
CALL inf_embed_corpus('notes');
RESET client_min_messages;
SELECT c.model, count(*) AS passages, bool_and(p.embedded_with = m.fingerprint) AS all_current,
       min(cardinality(p.embedding)) AS dimension
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) JOIN inf_ir.models m ON m.name = c.model
WHERE c.name = 'notes' GROUP BY c.model;
SELECT (SELECT sum(x::float8 * y::float8) FROM unnest(p.embedding, inf_embed('Coffee is brewed from beans.', 'src_dec')) t(x, y)) > 0.99999 AS same_vector
FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'notes' AND p.body = 'Coffee is brewed from beans.';
SELECT n.tenant, n.slug FROM inf_search(NULL, 'coffee beans', 1, 'notes') s
JOIN notes n ON (n.tenant, n.slug) = ((s.external_id::jsonb ->> 0)::int, s.external_id::jsonb ->> 1);
DELETE FROM notes WHERE tenant = 2 AND slug = 'a';
SELECT external_id FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'notes' ORDER BY 1;

-- A switch of text columns (a model switch takes the same path): a
-- successor follows the table beside the live corpus (background off, as
-- the corpus's), searches keep the current embeddings until CALL
-- inf_embed_corpus embeds the successor and switches.
\set VERBOSITY default
SELECT inf_alter_corpus('docs', model => 'nosuch');
SELECT inf_alter_corpus('docs', text => ARRAY['nosuch']);
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT inf_alter_corpus('docs', text => ARRAY['title']);
RESET client_min_messages;
SELECT corpus LIKE '.next-%' AS successor, model, replaces, background, queued, passages
FROM inf_ir.source_progress WHERE corpus = 'docs' OR replaces = 'docs' ORDER BY 1;
DO $$ BEGIN
    PERFORM inf_alter_corpus((SELECT corpus FROM inf_ir.source_progress WHERE replaces = 'docs'), text => ARRAY['content']);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE NOTICE 'refused: %', regexp_replace(SQLERRM, '[0-9]+', 'N');
END $$;
SELECT d.id, s.body FROM inf_search(NULL, 'cats', 1, 'docs') s JOIN docs d ON d.id = s.external_id::bigint;
SET client_min_messages = warning;
SELECT inf_finish_corpus_switch('docs');
CALL inf_embed_corpus('docs');
RESET client_min_messages;
SELECT corpus, model, replaces, queued, passages FROM inf_ir.source_progress WHERE corpus = 'docs' OR replaces = 'docs';
SELECT count(*) AS switch_corpora_left FROM inf_ir.corpora WHERE name LIKE '.%';
SELECT d.id, s.body FROM inf_search(NULL, 'cats', 1, 'docs') s JOIN docs d ON d.id = s.external_id::bigint;
SELECT external_id, body FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs' ORDER BY 1;
-- Asking for the current settings cancels a switch under way.
SET client_min_messages = warning;
SELECT inf_alter_corpus('docs', text => ARRAY['title', 'content']);
SELECT inf_alter_corpus('docs', text => ARRAY['title']);
RESET client_min_messages;
SELECT count(*) AS switch_corpora_left FROM inf_ir.corpora WHERE name LIKE '.%';
SELECT inf_finish_corpus_switch('docs');

-- TRUNCATE empties the corpus; inf_drop_corpus removes triggers, functions and queue.
TRUNCATE docs;
SELECT count(*) AS passages_left FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'docs';
SELECT inf_drop_corpus('docs'), inf_drop_corpus('notes');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'inf\_ir\_corpus\_%';
SELECT count(*) AS functions_left FROM pg_proc WHERE proname LIKE 'corpus\_%' AND pronamespace = 'inf_ir'::regnamespace;
SELECT count(*) AS queued FROM inf_ir.source_changes;
DROP TABLE docs, notes, nokey CASCADE;
SELECT inf_unregister_model('src_dec');
DROP ROLE inf_ir_reader, inf_ir_outsider;
