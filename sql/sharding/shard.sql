-- inf_ir sharding, shard side: run in each shard's database after
-- CREATE EXTENSION inf_ir (psql -f). The proxy's functions
-- (sql/sharding/proxy.sql) call these through PL/Proxy; a shard is a plain
-- inf_ir database that holds the passages whose hashtext(external_id) maps
-- to it, embeds them with its own worker and answers inf_search_vector.
SET client_min_messages = warning;  -- not the NOTICEs of DROP FUNCTION IF EXISTS (older signatures)
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
-- metadatas: one jsonb object per passage, or NULL for '{}' everywhere.
DROP FUNCTION IF EXISTS inf_ir_shard.put_passages(text, text[], text[], text[]);  -- before metadatas
CREATE OR REPLACE FUNCTION inf_ir_shard.put_passages(corpus text, external_ids text[], bodies text[],
    titles text[] DEFAULT NULL, metadatas jsonb[] DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(inf_ir_shard.put_passage(put_passages.corpus, e, b, t, m))
    FROM unnest(external_ids, bodies, coalesce(titles, array_fill(NULL::text, ARRAY[cardinality(external_ids)])),
                coalesce(metadatas, array_fill(NULL::jsonb, ARRAY[cardinality(external_ids)])))
         AS u(e, b, t, m)
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
RETURNS integer LANGUAGE plpgsql
SET client_min_messages = warning  -- the index's "already exists, skipping" would reach the proxy as a WARNING
AS $$
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

-- Add or replace passages together with embeddings made elsewhere (moving a
-- corpus from one server onto shards, or between shard layouts, without
-- embedding it again). embeddings[i] is a real[] in text form; fingerprint
-- is inf_ir.models.fingerprint of the model files that made them, which
-- must be this shard's current files for the corpus's model.
DROP FUNCTION IF EXISTS inf_ir_shard.put_embedded_passages(text, text[], text[], text[], text[], text);  -- before metadatas
CREATE OR REPLACE FUNCTION inf_ir_shard.put_embedded_passages(corpus text, external_ids text[], bodies text[],
    titles text[], embeddings text[], fingerprint text, metadatas jsonb[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    c record;
    n bigint;
BEGIN
    SELECT co.corpus_id, co.model, m.fingerprint, m.dimension INTO c
    FROM inf_ir.corpora co JOIN inf_ir.models m ON m.name = co.model WHERE co.name = put_embedded_passages.corpus;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'corpus "%" does not exist on this shard', put_embedded_passages.corpus
            USING ERRCODE = 'undefined_object', HINT = 'create it on every shard with inf_ir_proxy.create_corpus(name)';
    END IF;
    IF put_embedded_passages.fingerprint IS DISTINCT FROM c.fingerprint THEN
        RAISE EXCEPTION 'the embeddings come from other files than this shard''s model "%"', c.model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass the source''s inf_ir.models.fingerprint; with other model files load the passages with put_passages and embed them here';
    END IF;
    IF cardinality(embeddings) IS DISTINCT FROM cardinality(external_ids) THEN
        RAISE EXCEPTION 'one embedding per passage: % passages, % embeddings',
            cardinality(external_ids), cardinality(embeddings) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A vector of the wrong size or with NaN would rank arbitrarily: refuse the batch.
    IF EXISTS (SELECT FROM unnest(embeddings) e
               WHERE e IS NULL OR cardinality(e::real[]) <> c.dimension
                  OR 'NaN'::real = ANY(e::real[]) OR 'Infinity'::real = ANY(e::real[])
                  OR '-Infinity'::real = ANY(e::real[])) THEN
        RAISE EXCEPTION 'every embedding must have % finite values', c.dimension
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass the vectors of inf_ir.passages.embedding as text';
    END IF;
    INSERT INTO inf_ir.passages AS p (corpus_id, external_id, title, body, metadata, embedding, embedded_with)
    SELECT c.corpus_id, u.e, u.t, u.b, coalesce(u.m, '{}'), u.v::real[], c.fingerprint
    FROM unnest(external_ids, bodies, coalesce(titles, array_fill(NULL::text, ARRAY[cardinality(external_ids)])),
                embeddings, coalesce(metadatas, array_fill(NULL::jsonb, ARRAY[cardinality(external_ids)])))
         AS u(e, b, t, v, m)
    ON CONFLICT (corpus_id, external_id) DO UPDATE
        SET title = EXCLUDED.title, body = EXCLUDED.body, metadata = EXCLUDED.metadata,
            embedding = EXCLUDED.embedding, embedded_with = EXCLUDED.embedded_with;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Re-rank the corpus's passages with these external ids against a query
-- vector (inf_rerank_vector: stored embeddings where current, the others
-- embedded now); this shard's best k, all without k.
CREATE OR REPLACE FUNCTION inf_ir_shard.rerank(query_embedding real[], corpus text, external_ids text[], k integer)
RETURNS TABLE(passage_id bigint, external_id text, body text, score real)
LANGUAGE plpgsql STABLE AS $$
DECLARE c integer;
BEGIN
    SELECT co.corpus_id INTO c FROM inf_ir.corpora co WHERE co.name = rerank.corpus;
    IF c IS NULL THEN
        RAISE EXCEPTION 'corpus "%" does not exist on this shard', rerank.corpus
            USING ERRCODE = 'undefined_object', HINT = 'create it on every shard with inf_ir_proxy.create_corpus(name)';
    END IF;
    RETURN QUERY
        SELECT r.passage_id, r.external_id, r.body, r.score
        FROM inf_rerank_vector(query_embedding,
             ARRAY(SELECT p.passage_id FROM inf_ir.passages p
                   WHERE p.corpus_id = c AND p.external_id = ANY(external_ids)), k) r;
EXCEPTION WHEN query_canceled THEN  -- see inf_ir_shard.search
    RAISE EXCEPTION 'the re-ranking on this shard was canceled: %', SQLERRM
        USING HINT = 'statement_timeout here is the proxy''s search_timeout (inf_ir_proxy.set_shards)';
END $$;

-- The proxy's searches call this: inf_search_vector, with this shard's
-- statement_timeout (the proxy's search_timeout) turned into a plain ERROR.
-- PL/Proxy treats a relayed 57014 as its own cancel and then at times
-- misses the reply until the caller's statement_timeout; a plain ERROR
-- reaches the proxy at once and names the shard there.
DROP FUNCTION IF EXISTS inf_ir_shard.search(real[], integer, text);  -- before filter
CREATE OR REPLACE FUNCTION inf_ir_shard.search(query_embedding real[], k integer, corpus text,
    filter jsonb DEFAULT NULL)
RETURNS TABLE(passage_id bigint, external_id text, body text, score real, rank integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT s.passage_id, s.external_id, s.body, s.score, s.rank
                 FROM inf_search_vector(query_embedding, k, corpus, filter => search.filter) s;
EXCEPTION WHEN query_canceled THEN
    RAISE EXCEPTION 'the search on this shard was canceled: %', SQLERRM
        USING HINT = 'statement_timeout here is the proxy''s search_timeout (inf_ir_proxy.set_shards)';
END $$;
