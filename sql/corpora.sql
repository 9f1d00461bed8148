-- Passage corpora for inf_search. A corpus names the model its passages are
-- embedded with; each passage remembers the fingerprint of the model files
-- that produced its embedding, so a changed model makes it stale.
CREATE TABLE inf_ir.corpora (
    corpus_id  serial PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    model      text NOT NULL REFERENCES inf_ir.models(name) ON UPDATE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A corpus that follows a table (sql/source_corpora.sql): the table, its
    -- key, text and metadata columns, and the role whose privileges read it.
    source          regclass,
    source_key      text[],
    source_text     text[],
    source_metadata text[],
    source_owner    regrole,
    -- Whether the background embedder drains its queue (inf_alter_corpus).
    background      boolean NOT NULL DEFAULT true,
    -- A switch of model or text columns (inf_alter_corpus): the successor
    -- corpus being embedded in the background names the corpus it will
    -- replace; the replaced one, once the successor took its name, is
    -- retired and dropped by the background embedder.
    successor_of    integer REFERENCES inf_ir.corpora ON DELETE CASCADE,
    retired         boolean NOT NULL DEFAULT false,
    -- The transaction that retired it: its triggers and functions are
    -- dropped only once no snapshot from before that transaction is left.
    retired_xid     xid8,
    CONSTRAINT corpora_source_complete CHECK (
        (source IS NULL) = (source_key IS NULL) AND (source IS NULL) = (source_text IS NULL)
        AND (source IS NULL) = (source_owner IS NULL))
);
COMMENT ON TABLE inf_ir.corpora IS 'Named passage collections searched by inf_search().';

CREATE TABLE inf_ir.passages (
    passage_id    bigserial PRIMARY KEY,
    corpus_id     integer NOT NULL REFERENCES inf_ir.corpora ON DELETE CASCADE,
    external_id   text NOT NULL,
    title         text,
    body          text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    embedding     real[],
    embedded_with text,  -- fingerprint of the model files that produced embedding
    UNIQUE (corpus_id, external_id),
    CONSTRAINT passages_fingerprint_needs_embedding CHECK (embedding IS NOT NULL OR embedded_with IS NULL)
);
-- Keep embeddings in the row (a long body is moved out of line first); an
-- out-of-line vector makes every scan fetch it from TOAST.
ALTER TABLE inf_ir.passages ALTER COLUMN embedding SET STORAGE MAIN;
-- No statistics on the vectors: ANALYZE would otherwise collect element
-- statistics of every real[] (384+ elements a row, all rows sampled) that no
-- plan uses, taking CPU from the embedder on each autoanalyze.
ALTER TABLE inf_ir.passages ALTER COLUMN embedding SET STATISTICS 0;
CREATE INDEX passages_pending ON inf_ir.passages (corpus_id, passage_id) WHERE embedding IS NULL;
-- Counts passages without a current embedding at each search (btree
-- deduplication keeps one fingerprint per corpus small).
CREATE INDEX passages_embedded_with ON inf_ir.passages (corpus_id, embedded_with);
-- The vector indexes are per corpus and model files: partial inf_ivf indexes
-- named passages_ivf_<corpus_id>_<fingerprint prefix>, made by
-- inf_corpus_index() (which inf_embed_corpus calls when it is done).
COMMENT ON TABLE inf_ir.passages IS
    'Passages of the corpora; load with inf_load_jsonl() or plain INSERT/COPY, embed with CALL inf_embed_corpus().';

-- Progress of inf_embed_corpus(), committed per batch so other sessions see it.
CREATE TABLE inf_ir.embedding_runs (
    run_id     bigserial PRIMARY KEY,
    corpus_id  integer NOT NULL REFERENCES inf_ir.corpora ON DELETE CASCADE,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    total      bigint NOT NULL,
    done       bigint NOT NULL DEFAULT 0,
    finished   boolean NOT NULL DEFAULT false
);

-- Metadata filters with a vector index of their own (inf_filter_index): a
-- partial inf_ivf index over the corpus's passages that contain the filter,
-- named passages_ivf_<corpus_id>_<fingerprint prefix>_f<md5 prefix of filter::text>.
CREATE TABLE inf_ir.filter_indexes (
    corpus_id  integer NOT NULL REFERENCES inf_ir.corpora ON DELETE CASCADE,
    filter     jsonb NOT NULL CHECK (jsonb_typeof(filter) = 'object' AND filter <> '{}'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (corpus_id, filter)
);

REVOKE ALL ON inf_ir.corpora, inf_ir.passages, inf_ir.embedding_runs, inf_ir.filter_indexes FROM PUBLIC;
GRANT SELECT ON inf_ir.corpora, inf_ir.passages, inf_ir.embedding_runs, inf_ir.filter_indexes TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.filter_indexes', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.corpora', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.passages', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.corpora_corpus_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.passages_passage_id_seq', '');

-- A changed title or body makes the stored embedding stale, unless the
-- same UPDATE brings a new embedding for the new text.
CREATE FUNCTION inf_ir.passages_text_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (NEW.body IS DISTINCT FROM OLD.body OR NEW.title IS DISTINCT FROM OLD.title)
       AND NEW.embedding IS NOT DISTINCT FROM OLD.embedding THEN
        NEW.embedding := NULL;
        NEW.embedded_with := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER passages_text_changed BEFORE UPDATE OF title, body ON inf_ir.passages
    FOR EACH ROW EXECUTE FUNCTION inf_ir.passages_text_changed();

-- What the embedding maintenance has left to do, and how fast it goes.
CREATE VIEW inf_ir.embedding_progress AS
SELECT c.name AS corpus,
       c.model,
       count(p.passage_id) AS total,
       count(p.passage_id) FILTER (WHERE p.embedded_with = m.fingerprint) AS embedded,
       count(p.passage_id) FILTER (WHERE p.embedded_with IS DISTINCT FROM m.fingerprint) AS pending,
       r.started_at AS last_run_started,
       r.done AS last_run_done,
       r.total AS last_run_total,
       r.finished AS last_run_finished,
       round((r.done / nullif(extract(epoch FROM r.updated_at - r.started_at), 0))::numeric, 1) AS last_run_rate_per_s
FROM inf_ir.corpora c
JOIN inf_ir.models m ON m.name = c.model
LEFT JOIN inf_ir.passages p ON p.corpus_id = c.corpus_id
LEFT JOIN LATERAL (SELECT * FROM inf_ir.embedding_runs r WHERE r.corpus_id = c.corpus_id
                   ORDER BY r.run_id DESC LIMIT 1) r ON true
GROUP BY c.corpus_id, c.name, c.model, r.run_id, r.started_at, r.done, r.total, r.finished, r.updated_at;
GRANT SELECT ON inf_ir.embedding_progress TO PUBLIC;
