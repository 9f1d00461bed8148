-- inf_ir sharding, proxy side: run in the proxy's database after
-- CREATE EXTENSION inf_ir (for query embedding) with psql -f. Needs
-- PL/Proxy (Debian: postgresql-15-plproxy). Each shard runs
-- sql/sharding/shard.sql. A passage lives on the shard that
-- hashtext(external_id) picks; a search embeds the query once here, sends
-- the vector to every shard at once (PL/Proxy RUN ON ALL) and merges their
-- top k into the exact top k.
CREATE EXTENSION IF NOT EXISTS plproxy;
CREATE SCHEMA IF NOT EXISTS inf_ir_proxy;

-- The shards, as PL/Proxy's cluster 'inf_ir_shards' (a SQL/MED server):
-- a power of two of libpq connection strings, shard 0 first. Superusers
-- only: it makes the server connect to other servers.
CREATE OR REPLACE FUNCTION inf_ir_proxy.set_shards(conninfos text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(conninfos), 0);
    options text;
BEGIN
    IF n < 1 OR (n & (n - 1)) <> 0 OR array_position(conninfos, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'give 1, 2, 4, 8, ... shard connection strings, not %', n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'PL/Proxy maps hashtext(external_id) to a shard with a bit mask, so their number is a power of two';
    END IF;
    SELECT string_agg(format('p%s %L', i - 1, conninfos[i]), ', ' ORDER BY i) INTO options
    FROM generate_subscripts(conninfos, 1) i;
    DROP SERVER IF EXISTS inf_ir_shards CASCADE;
    EXECUTE format('CREATE SERVER inf_ir_shards FOREIGN DATA WRAPPER plproxy OPTIONS (connection_lifetime %L, %s)',
                   '1800', options);
    CREATE USER MAPPING FOR PUBLIC SERVER inf_ir_shards;
    RETURN n;
END $$;
REVOKE EXECUTE ON FUNCTION inf_ir_proxy.set_shards(text[]) FROM PUBLIC;

-- Calls that run on the shards.
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_search(query_embedding real[], k integer, corpus text)
RETURNS TABLE(passage_id bigint, external_id text, body text, score real, rank integer)
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT passage_id, external_id, body, score, rank FROM inf_search_vector(query_embedding, k, corpus);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_corpus_model(corpus text) RETURNS SETOF text
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT inf_ir_shard.corpus_model(corpus);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.create_corpus(name text, model text DEFAULT NULL) RETURNS SETOF integer
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT inf_create_corpus(name, model);
$$;

-- Add or replace a passage on its shard; that shard's passage_id.
CREATE OR REPLACE FUNCTION inf_ir_proxy.put_passage(corpus text, external_id text, body text,
    title text DEFAULT NULL, metadata jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON hashtext(external_id);
    SELECT inf_ir_shard.put_passage(corpus, external_id, body, title, metadata);
$$;

-- Many at once: PL/Proxy splits the arrays by shard and sends each its part.
CREATE OR REPLACE FUNCTION inf_ir_proxy.put_passages(corpus text, external_ids text[], bodies text[],
    titles text[] DEFAULT NULL) RETURNS SETOF bigint
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    SPLIT external_ids, bodies, titles;
    RUN ON hashtext(external_ids);
    SELECT inf_ir_shard.put_passages(corpus, external_ids, bodies, titles);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.embed_step(corpus text, max_passages integer) RETURNS SETOF integer
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT inf_ir_shard.embed_pending(corpus, max_passages);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.corpus_counts(corpus text, OUT total bigint, OUT embedded bigint)
RETURNS SETOF record LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT total, embedded FROM inf_ir_shard.corpus_counts(corpus);
$$;

-- Embed every shard's pending passages, all shards at once, each on its
-- own worker; each step commits on the shards.
CREATE OR REPLACE PROCEDURE inf_ir_proxy.embed_corpus(corpus text, batch_size integer DEFAULT 256)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    done bigint := 0;
BEGIN
    LOOP
        SELECT sum(s) INTO n FROM inf_ir_proxy.embed_step(corpus, batch_size) s;
        EXIT WHEN coalesce(n, 0) = 0;
        done := done + n;
        RAISE NOTICE 'inf_ir_proxy.embed_corpus %: % passages embedded on the shards', corpus, done;
        COMMIT;
    END LOOP;
END $$;

-- Search a sharded corpus: the query embedded once here, with the corpus's
-- model; every shard's exact top k; the best k of them, ties by external_id
-- (passage ids are per shard).
CREATE OR REPLACE FUNCTION inf_ir_proxy.inf_search(instruction text, query text, k integer DEFAULT 10,
    corpus text DEFAULT 'default')
RETURNS TABLE(external_id text, body text, score real, rank integer, shard_passage_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    models text[];
    q real[];
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'inf_ir_proxy.inf_search(instruction, query, k, corpus)';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1, not %', coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(DISTINCT m) INTO models FROM inf_ir_proxy.shard_corpus_model(inf_search.corpus) m;
    IF models IS NULL OR array_position(models, NULL) IS NOT NULL OR cardinality(models) <> 1 THEN
        RAISE EXCEPTION 'corpus "%" is not on every shard with one model (models: %)', inf_search.corpus, models
            USING ERRCODE = 'undefined_object', HINT = 'create it with inf_ir_proxy.create_corpus(name)';
    END IF;
    q := inf_embed_query(instruction, query, models[1]);
    RETURN QUERY
        SELECT s.external_id, s.body, s.score,
               (row_number() OVER (ORDER BY s.score DESC, s.external_id))::integer, s.passage_id
        FROM inf_ir_proxy.shard_search(q, k, inf_search.corpus) s
        ORDER BY s.score DESC, s.external_id
        LIMIT k;
END $$;
