-- inf_ir sharding, shard side: run in each shard's database after
-- CREATE EXTENSION inf_ir (psql -f). The proxy's functions
-- (sql/sharding/proxy.sql) call these through PL/Proxy; a shard is a plain
-- inf_ir database that holds the passages whose hashtext(external_id) maps
-- to it, embeds them with its own worker and answers inf_search_vector.
CREATE SCHEMA IF NOT EXISTS inf_ir_shard;

-- Add or replace a passage of a corpus (a changed text loses its embedding,
-- as with any UPDATE of inf_ir.passages). Returns this shard's passage_id.
CREATE OR REPLACE FUNCTION inf_ir_shard.put_passage(corpus text, external_id text, body text,
    title text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE c integer; id bigint;
BEGIN
    SELECT corpus_id INTO c FROM inf_ir.corpora WHERE name = put_passage.corpus;
    IF c IS NULL THEN
        RAISE EXCEPTION 'corpus "%" does not exist on this shard', put_passage.corpus
            USING ERRCODE = 'undefined_object', HINT = 'create it on every shard with inf_ir_proxy.create_corpus(name)';
    END IF;
    INSERT INTO inf_ir.passages AS p (corpus_id, external_id, title, body, metadata)
    VALUES (c, put_passage.external_id, put_passage.title, put_passage.body, coalesce(put_passage.metadata, '{}'))
    ON CONFLICT (corpus_id, external_id) DO UPDATE
        SET title = EXCLUDED.title, body = EXCLUDED.body, metadata = EXCLUDED.metadata
    RETURNING p.passage_id INTO id;
    RETURN id;
END $$;

-- Many at once (the proxy's put_passages sends each shard its own part).
CREATE OR REPLACE FUNCTION inf_ir_shard.put_passages(corpus text, external_ids text[], bodies text[],
    titles text[] DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(inf_ir_shard.put_passage(put_passages.corpus, e, b, t))
    FROM unnest(external_ids, bodies, coalesce(titles, array_fill(NULL::text, ARRAY[cardinality(external_ids)])))
         AS u(e, b, t)
$$;

-- The corpus's model (the proxy embeds queries with it), or NULL.
CREATE OR REPLACE FUNCTION inf_ir_shard.corpus_model(corpus text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT c.model FROM inf_ir.corpora c WHERE c.name = corpus_model.corpus
$$;

-- Passages of a corpus on this shard and how many have a current embedding.
CREATE OR REPLACE FUNCTION inf_ir_shard.corpus_counts(corpus text, OUT total bigint, OUT embedded bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT e.total, e.embedded FROM inf_ir.embedding_progress e WHERE e.corpus = corpus_counts.corpus
$$;

-- Embed up to max_passages passages of the corpus that lack a current
-- embedding, on this shard's own worker, in the caller's transaction (the
-- proxy's inf_ir_proxy.embed_corpus calls it on all shards at once until
-- every shard says 0). With nothing left, make or retrain the vector index.
CREATE OR REPLACE FUNCTION inf_ir_shard.embed_pending(corpus text, max_passages integer DEFAULT 256)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    c record;
    ids bigint[];
    texts text[];
BEGIN
    SELECT co.corpus_id, co.model, m.fingerprint INTO c
    FROM inf_ir.corpora co JOIN inf_ir.models m ON m.name = co.model WHERE co.name = embed_pending.corpus;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'corpus "%" does not exist on this shard', embed_pending.corpus
            USING ERRCODE = 'undefined_object', HINT = 'create it on every shard with inf_ir_proxy.create_corpus(name)';
    END IF;
    SELECT array_agg(b.passage_id ORDER BY b.passage_id),
           array_agg(CASE WHEN coalesce(b.title, '') = '' THEN b.body ELSE b.title || ' ' || b.body END
                     ORDER BY b.passage_id)
    INTO ids, texts
    FROM (SELECT p.passage_id, p.title, p.body FROM inf_ir.passages p
          WHERE p.corpus_id = c.corpus_id AND p.embedded_with IS DISTINCT FROM c.fingerprint
          ORDER BY p.passage_id LIMIT max_passages FOR UPDATE SKIP LOCKED) b;
    IF ids IS NULL THEN
        PERFORM inf_corpus_index(embed_pending.corpus);
        RETURN 0;
    END IF;
    UPDATE inf_ir.passages p SET embedding = e.embedding, embedded_with = c.fingerprint
    FROM inf_embed_many(texts, c.model) e
    WHERE p.passage_id = ids[e.ord];
    RETURN cardinality(ids);
END $$;
