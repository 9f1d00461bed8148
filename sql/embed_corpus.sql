-- Embeds every passage of a corpus that has no current embedding, in
-- batches, committing after each one: a cancel loses only the batch in
-- flight, and calling it again resumes. Progress goes to NOTICEs and to
-- inf_ir.embedding_runs (see the view inf_ir.embedding_progress). At the end
-- it makes (or retrains) the corpus's vector index.
-- No SET clause: a procedure with one cannot COMMIT; names are qualified instead.
CREATE PROCEDURE @extschema@.inf_embed_corpus(corpus text, batch_size integer DEFAULT 256)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    run bigint;
    total bigint;
    n_done bigint := 0;
    last_id bigint := 0;
    ids bigint[];
    texts text[];
    started timestamptz := pg_catalog.clock_timestamp();
    rate numeric;
    up_to bigint;
    step record;
    n_embedded bigint := 0;
    n_busy bigint := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'the default, 256, suits most models';
    END IF;
    SELECT co.corpus_id, co.model, m.fingerprint, co.source INTO c
    FROM inf_ir.corpora co JOIN inf_ir.models m ON m.name = co.model
    WHERE co.name = corpus;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'corpus "%" does not exist', corpus
            USING ERRCODE = 'undefined_object', HINT = 'create it with inf_create_corpus(name) or inf_load_jsonl(corpus, path)';
    END IF;
    IF c.source IS NOT NULL THEN
        -- A corpus that follows a table: drain its queue (what is queued
        -- now; rows a writer holds go to the back, for the next call).
        -- Passages embedded with other model files are queued first.
        INSERT INTO inf_ir.source_changes (corpus_id, key)
        SELECT c.corpus_id, p.external_id FROM inf_ir.passages p
        WHERE p.corpus_id = c.corpus_id AND p.embedded_with IS DISTINCT FROM c.fingerprint;
        SELECT pg_catalog.count(*), pg_catalog.max(q.change_id) INTO total, up_to
        FROM inf_ir.source_changes q WHERE q.corpus_id = c.corpus_id;
        INSERT INTO inf_ir.embedding_runs(corpus_id, total) VALUES (c.corpus_id, total) RETURNING run_id INTO run;
        COMMIT;
        LOOP
            SELECT * INTO step FROM inf_ir.source_batch(c.corpus_id, batch_size, up_to);
            EXIT WHEN step.taken = 0;
            n_done := n_done + step.taken;
            n_embedded := n_embedded + step.embedded;
            n_busy := n_busy + step.busy;
            rate := pg_catalog.round((n_embedded / GREATEST(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started), 0.001))::numeric, 1);
            UPDATE inf_ir.embedding_runs SET done = n_done, updated_at = pg_catalog.clock_timestamp()
            WHERE run_id = run;
            RAISE NOTICE 'inf_embed_corpus %: % of % queued changes done, % rows embedded (% per second)',
                corpus, n_done, total, n_embedded, rate;
            COMMIT;
        END LOOP;
        IF n_busy > 0 THEN
            RAISE NOTICE 'inf_embed_corpus %: % rows were held by other transactions and stay queued', corpus, n_busy;
        END IF;
    ELSE
        SELECT pg_catalog.count(*) INTO total FROM inf_ir.passages p
        WHERE p.corpus_id = c.corpus_id AND p.embedded_with IS DISTINCT FROM c.fingerprint;
        INSERT INTO inf_ir.embedding_runs(corpus_id, total) VALUES (c.corpus_id, total) RETURNING run_id INTO run;
        COMMIT;
        LOOP
            SELECT pg_catalog.array_agg(b.passage_id ORDER BY b.passage_id),
                   pg_catalog.array_agg(CASE WHEN COALESCE(b.title, '') = '' THEN b.body
                                             ELSE b.title OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) b.body END
                                        ORDER BY b.passage_id)
            INTO ids, texts
            FROM (SELECT p.passage_id, p.title, p.body FROM inf_ir.passages p
                  WHERE p.corpus_id = c.corpus_id AND p.passage_id > last_id
                    AND p.embedded_with IS DISTINCT FROM c.fingerprint
                  ORDER BY p.passage_id LIMIT batch_size
                  FOR UPDATE SKIP LOCKED) b;
            EXIT WHEN ids IS NULL;
            UPDATE inf_ir.passages p SET embedding = e.embedding, embedded_with = c.fingerprint
            FROM @extschema@.inf_embed_many(texts, c.model) e
            WHERE p.passage_id = ids[e.ord];
            n_done := n_done + pg_catalog.cardinality(ids);
            last_id := ids[pg_catalog.cardinality(ids)];
            rate := pg_catalog.round((n_done / GREATEST(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started), 0.001))::numeric, 1);
            UPDATE inf_ir.embedding_runs SET done = n_done, updated_at = pg_catalog.clock_timestamp()
            WHERE run_id = run;
            RAISE NOTICE 'inf_embed_corpus %: % of % passages embedded (% per second)', corpus, n_done, total, rate;
            COMMIT;
        END LOOP;
    END IF;
    UPDATE inf_ir.embedding_runs SET finished = true, updated_at = pg_catalog.clock_timestamp() WHERE run_id = run;
    COMMIT;
    -- A model or text switch under way (inf_alter_corpus): embed the
    -- successor's rows too, then switch.
    IF EXISTS (SELECT 1 FROM inf_ir.corpora s WHERE s.successor_of = c.corpus_id) THEN
        CALL @extschema@.inf_embed_corpus('.next-' OPERATOR(pg_catalog.||) c.corpus_id, batch_size);
        IF @extschema@.inf_finish_corpus_switch(corpus) THEN
            RAISE NOTICE 'inf_embed_corpus %: switched to the new model and text columns', corpus;
        END IF;
        COMMIT;
    END IF;
    -- The vector index: made on the first run, retrained once the corpus
    -- has doubled since its lists were trained.
    RAISE NOTICE 'inf_embed_corpus %: vector index %', corpus, @extschema@.inf_corpus_index(corpus);
    COMMIT;
END $$;
COMMENT ON PROCEDURE @extschema@.inf_embed_corpus(text, integer) IS
    'Embed passages of a corpus that lack a current embedding; commits per batch, resumable.';
