-- Corpora that follow an application's table (inf_create_corpus(...,
-- source => ...)). Each source table carries statement-level triggers
-- (made per corpus by src/engine/source/statements.rs) that, in the
-- writer's transaction, delete passages of deleted rows, update the
-- metadata of rows whose text did not change, and queue here every key
-- whose text must be embedded (new rows, changed text, a changed key).

CREATE TABLE inf_ir.source_changes (
    change_id bigint GENERATED ALWAYS AS IDENTITY,
    corpus_id integer NOT NULL,
    key       text NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE inf_ir.source_changes IS
    'Keys of source rows whose passage must be (re)made, per table-following corpus; drained in batches.';
-- No foreign key: a check per queued row would slow the application's writes.
CREATE INDEX source_changes_corpus ON inf_ir.source_changes (corpus_id, change_id);
REVOKE ALL ON inf_ir.source_changes FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.source_changes', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.source_changes_change_id_seq', '');

-- One batch of a table-following corpus's queue, in the caller's
-- transaction (the caller commits): takes up to batch_size entries queued
-- at or before up_to, embeds the rows whose text is new to the corpus, and
-- writes their passages. Locks held: none while embedding (step 1 reads
-- without locks); then FOR SHARE on the rows it writes, skipping rows a
-- writer holds (they go to the back of the queue), until the commit. A
-- crash or cancel before the commit leaves every entry queued.
CREATE FUNCTION inf_ir.source_batch(corpus integer, batch_size integer, up_to bigint,
                                    OUT taken integer, OUT embedded integer, OUT removed integer, OUT busy integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    ids bigint[];
    keys text[];
    present text[];
    embed_keys text[];
    embed_texts text[];
    vectors real[];
    locked_keys text[];
    locked_texts text[];
    locked_metadata jsonb[];
    fresh_keys text[];
    fresh_texts text[];
    fresh_metadata jsonb[];
    fresh_slots bigint[];
    held text[];
BEGIN
    taken := 0; embedded := 0; removed := 0; busy := 0;
    SELECT co.model, m.fingerprint, m.dimension INTO c
    FROM inf_ir.corpora co JOIN inf_ir.models m ON m.name = co.model
    WHERE co.corpus_id = corpus AND co.source IS NOT NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'corpus % does not follow a table', corpus
            USING ERRCODE = 'undefined_object', HINT = 'see inf_ir.corpora.source';
    END IF;
    -- One embedder per corpus: a second one waits here for the first's commit.
    PERFORM pg_advisory_xact_lock(1718185569, corpus);
    SELECT array_agg(q.change_id), array_agg(DISTINCT q.key) INTO ids, keys
    FROM (SELECT s.change_id, s.key FROM inf_ir.source_changes s
          WHERE s.corpus_id = corpus AND s.change_id <= up_to
          ORDER BY s.change_id LIMIT batch_size) q;
    taken := coalesce(cardinality(ids), 0);
    IF taken = 0 THEN
        RETURN;
    END IF;

    -- 1. The rows as they are now, without locks. Embedded: rows whose
    -- passage is missing, has other text, or another model's vector.
    EXECUTE format(
        'SELECT array_agg(r.key), array_agg(r.key) FILTER (WHERE r.needed), array_agg(r.text) FILTER (WHERE r.needed)
         FROM (SELECT r.key, r.text,
                      r.text <> %L AND (p.body IS DISTINCT FROM r.text OR p.embedded_with IS DISTINCT FROM $3) AS needed
               FROM inf_ir.%I($1) r
               LEFT JOIN inf_ir.passages p ON p.corpus_id = $2 AND p.external_id = r.key) r',
        '', 'corpus_' || corpus || '_read')
    INTO present, embed_keys, embed_texts USING keys, corpus, c.fingerprint;
    IF embed_keys IS NOT NULL THEN
        SELECT array_agg(t.v ORDER BY e.ord, t.n) INTO vectors
        FROM @extschema@.inf_embed_many(embed_texts, c.model) e,
             unnest(e.embedding) WITH ORDINALITY t(v, n);
    END IF;

    -- 2. What is still there, locked until this transaction commits.
    EXECUTE format('SELECT array_agg(l.key), array_agg(l.text), array_agg(l.metadata) FROM inf_ir.%I($1) l',
                   'corpus_' || corpus || '_lock')
    INTO locked_keys, locked_texts, locked_metadata USING present;
    -- Rows embedded in step 1 whose text is unchanged: their passage, with
    -- the metadata they have now.
    SELECT array_agg(l.key), array_agg(l.text), array_agg(l.metadata), array_agg(e.slot)
    INTO fresh_keys, fresh_texts, fresh_metadata, fresh_slots
    FROM unnest(locked_keys, locked_texts, locked_metadata) l(key, text, metadata)
    JOIN unnest(embed_keys, embed_texts) WITH ORDINALITY e(key, text, slot)
      ON e.key = l.key AND e.text = l.text;
    INSERT INTO inf_ir.passages AS p (corpus_id, external_id, title, body, metadata, embedding, embedded_with)
    SELECT corpus, f.key, NULL, f.text, f.metadata,
           vectors[(f.slot - 1) * c.dimension + 1 : f.slot * c.dimension], c.fingerprint
    FROM unnest(fresh_keys, fresh_texts, fresh_metadata, fresh_slots) f(key, text, metadata, slot)
    ON CONFLICT (corpus_id, external_id) DO UPDATE
        SET title = NULL, body = EXCLUDED.body, metadata = EXCLUDED.metadata,
            embedding = EXCLUDED.embedding, embedded_with = EXCLUDED.embedded_with;
    GET DIAGNOSTICS embedded = ROW_COUNT;
    -- passages_text_changed clears a vector that did not change with the
    -- text (two texts the tokenizer reads alike); put it back.
    UPDATE inf_ir.passages p
    SET embedding = vectors[(f.slot - 1) * c.dimension + 1 : f.slot * c.dimension], embedded_with = c.fingerprint
    FROM unnest(fresh_keys, fresh_slots) f(key, slot)
    WHERE p.corpus_id = corpus AND p.external_id = f.key AND p.embedding IS NULL;
    -- Same text: only the metadata may have moved (a change the writer's
    -- trigger could not apply, its passage not yet visible to it).
    UPDATE inf_ir.passages p SET metadata = l.metadata
    FROM unnest(locked_keys, locked_texts, locked_metadata) l(key, text, metadata)
    WHERE p.corpus_id = corpus AND p.external_id = l.key AND p.body = l.text
      AND p.metadata IS DISTINCT FROM l.metadata;
    -- Rows gone, or with no text left: no passage.
    DELETE FROM inf_ir.passages p
    WHERE p.corpus_id = corpus
      AND ((p.external_id = ANY (keys) AND p.external_id <> ALL (coalesce(present, '{}')))
           OR p.external_id IN (SELECT l.key FROM unnest(locked_keys, locked_texts) l(key, text) WHERE l.text = ''));
    GET DIAGNOSTICS removed = ROW_COUNT;
    -- Rows a writer holds (or deleted since step 1) go to the back of the
    -- queue; everything else taken is done.
    held := ARRAY(SELECT unnest(coalesce(present, '{}')) EXCEPT SELECT unnest(coalesce(locked_keys, '{}')));
    busy := cardinality(held);
    DELETE FROM inf_ir.source_changes WHERE change_id = ANY (ids);
    INSERT INTO inf_ir.source_changes (corpus_id, key) SELECT corpus, unnest(held);
END $$;
REVOKE ALL ON FUNCTION inf_ir.source_batch(integer, integer, bigint) FROM PUBLIC;

-- What the background embedder did per corpus, updated in each batch's
-- transaction (errors in one of their own, after the batch rolled back).
CREATE TABLE inf_ir.source_embedding (
    corpus_id       integer PRIMARY KEY REFERENCES inf_ir.corpora ON DELETE CASCADE,
    batches         bigint NOT NULL DEFAULT 0,
    rows_done       bigint NOT NULL DEFAULT 0,
    rows_embedded   bigint NOT NULL DEFAULT 0,
    last_batch_at   timestamptz,
    last_batch_rate double precision,
    last_error      text,
    last_error_at   timestamptz
);
REVOKE ALL ON inf_ir.source_embedding FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.source_embedding', '');

-- Per table-following corpus: what is queued, how old the oldest change
-- is (the lag), how fast the background embedder goes, its last error.
CREATE VIEW inf_ir.source_progress AS
SELECT c.name AS corpus,
       c.source,
       c.model,
       -- A successor (inf_alter_corpus(name, model, text)): the corpus whose
       -- name it takes once all its rows are embedded.
       (SELECT r.name FROM inf_ir.corpora r WHERE r.corpus_id = c.successor_of) AS replaces,
       c.background,
       q.queued,
       q.oldest AS oldest_queued_at,
       CASE WHEN q.queued > 0 THEN pg_catalog.now() - q.oldest END AS lag,
       (SELECT pg_catalog.count(*) FROM inf_ir.passages p WHERE p.corpus_id = c.corpus_id) AS passages,
       s.rows_embedded,
       s.last_batch_at,
       pg_catalog.round(s.last_batch_rate::numeric, 1) AS last_batch_rate_per_s,
       s.last_error,
       s.last_error_at
FROM inf_ir.corpora c
CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS queued, pg_catalog.min(x.queued_at) AS oldest
                    FROM inf_ir.source_changes x WHERE x.corpus_id = c.corpus_id) q
LEFT JOIN inf_ir.source_embedding s ON s.corpus_id = c.corpus_id
WHERE c.source IS NOT NULL AND NOT c.retired;
GRANT SELECT ON inf_ir.source_progress TO PUBLIC;
