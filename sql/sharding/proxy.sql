-- inf_ir sharding, proxy side: run in the proxy's database after
-- CREATE EXTENSION inf_ir (for query embedding) with psql -f. Needs
-- PL/Proxy (Debian: postgresql-15-plproxy). Each shard runs
-- sql/sharding/shard.sql. A passage lives on the shard that
-- hashtext(external_id) picks; a search embeds the query once here, sends
-- the vector to every shard at once (PL/Proxy RUN ON ALL) and merges their
-- top k into one top k: what one server holding every passage would return.
SET client_min_messages = warning;  -- not the NOTICEs of DROP FUNCTION IF EXISTS (older signatures)
CREATE EXTENSION IF NOT EXISTS plproxy;
CREATE SCHEMA IF NOT EXISTS inf_ir_proxy;

-- Define (or redefine) a PL/Proxy cluster as a SQL/MED server with these
-- partitions. Redefining keeps the server, its grants and user mappings.
CREATE OR REPLACE FUNCTION inf_ir_proxy.define_cluster(cluster name, conninfos text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old text[];
    options text;
BEGIN
    SELECT string_agg(format('ADD p%s %L', i - 1, conninfos[i]), ', ' ORDER BY i) INTO options
    FROM generate_subscripts(conninfos, 1) i;
    options := options || format(', ADD connection_lifetime %L', '1800');
    SELECT srvoptions INTO old FROM pg_foreign_server WHERE srvname = cluster;
    IF NOT FOUND THEN
        -- PL/Proxy's validator wants the partitions in the same statement.
        EXECUTE format('CREATE SERVER %I FOREIGN DATA WRAPPER plproxy OPTIONS (%s)',
                       cluster, replace(options, 'ADD ', ''));
        EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER %I', cluster);
    ELSE
        -- One statement: the old options out, the new in.
        EXECUTE format('ALTER SERVER %I OPTIONS (%s)', cluster,
                       concat_ws(', ', (SELECT string_agg(format('DROP %I', split_part(o, '=', 1)), ', ')
                                        FROM unnest(old) o), options));
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION inf_ir_proxy.define_cluster(name, text[]) FROM PUBLIC;

-- The shards: a power of two of libpq connection strings, shard 0 first.
-- Superusers only: it makes the server connect to other servers. Two
-- PL/Proxy clusters (SQL/MED servers) reach them: 'inf_ir_shards' for
-- loading and embedding, 'inf_ir_shards_search' for searches, whose
-- connections carry statement_timeout = search_timeout so that a slow
-- shard ends in an ERROR that names it (PL/Proxy's own query_timeout does
-- not fire while a shard stays silent). Without search_timeout a slow
-- shard is bounded by the caller's statement_timeout, whose cancel PL/Proxy
-- forwards to every shard. The strings are in pg_foreign_server, which
-- every role can read, so they must not hold a password: the proxy
-- server's OS user gives it from ~/.pgpass (or use certificate or peer
-- authentication). Roles other than superusers need
-- GRANT USAGE ON FOREIGN SERVER inf_ir_shards, inf_ir_shards_search.
CREATE OR REPLACE FUNCTION inf_ir_proxy.set_shards(conninfos text[], search_timeout interval DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(conninfos), 0);
    timeout_ms bigint := coalesce((extract(epoch FROM search_timeout) * 1000)::bigint, 0);
BEGIN
    IF n < 1 OR (n & (n - 1)) <> 0 OR array_position(conninfos, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'give 1, 2, 4, 8, ... shard connection strings, not %', n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'PL/Proxy maps hashtext(external_id) to a shard with a bit mask, so their number is a power of two';
    END IF;
    -- Read by libpq's own parser (inf_conninfo_keywords), which decodes what
    -- text matching would miss (a URI's pass%77ord=); an unreadable string
    -- is an ERROR there.
    IF EXISTS (SELECT FROM unnest(conninfos) c
               WHERE inf_conninfo_keywords(c) && ARRAY['password', 'sslpassword']) THEN
        RAISE EXCEPTION 'a shard connection string holds a password'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'every role can read them in pg_foreign_server: put the password in ~/.pgpass of the proxy server''s OS user';
    END IF;
    IF timeout_ms < 0 THEN
        RAISE EXCEPTION 'search_timeout must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_ms > 0 AND EXISTS (SELECT FROM unnest(conninfos) c WHERE 'options' = ANY (inf_conninfo_keywords(c))) THEN
        RAISE EXCEPTION 'a shard connection string sets options, which search_timeout needs for itself'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'set those options in the shards'' postgresql.conf';
    END IF;
    PERFORM inf_ir_proxy.define_cluster('inf_ir_shards', conninfos);
    PERFORM inf_ir_proxy.define_cluster('inf_ir_shards_search', CASE WHEN timeout_ms = 0 THEN conninfos
        ELSE ARRAY(SELECT CASE WHEN c ~ '^[a-z]+://'
                               THEN c || CASE WHEN c LIKE '%?%' THEN '&' ELSE '?' END
                                      || 'options=-c%20statement_timeout%3D' || timeout_ms
                               ELSE c || format(' options=''-c statement_timeout=%s''', timeout_ms) END
                   FROM unnest(conninfos) WITH ORDINALITY u(c, i) ORDER BY i) END);
    RETURN n;
END $$;
REVOKE EXECUTE ON FUNCTION inf_ir_proxy.set_shards(text[], interval) FROM PUBLIC;

-- How many shards set_shards configured (0 before it ran).
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_count() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM pg_foreign_server s, unnest(s.srvoptions) o
    WHERE s.srvname = 'inf_ir_shards_search' AND o ~ '^p[0-9]+='
$$;

-- Calls that run on the shards.
-- (Signatures from before filters and metadata are dropped first, here and
-- below, so that calls with the old arguments are not ambiguous.)
DROP FUNCTION IF EXISTS inf_ir_proxy.shard_search(real[], integer, text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_search(query_embedding real[], k integer, corpus text, filter jsonb)
RETURNS TABLE(passage_id bigint, external_id text, body text, score real, rank integer)
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards_search';
    RUN ON ALL;
    SELECT passage_id, external_id, body, score, rank FROM inf_ir_shard.search(query_embedding, k, corpus, filter);
$$;

-- The same on one shard (0 .. shard_count() - 1): a partial search asks
-- the shards one by one to learn which of them fail.
DROP FUNCTION IF EXISTS inf_ir_proxy.shard_search_on(integer, real[], integer, text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_search_on(shard integer, query_embedding real[], k integer, corpus text,
    filter jsonb)
RETURNS TABLE(passage_id bigint, external_id text, body text, score real, rank integer)
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards_search';
    RUN ON shard;
    SELECT passage_id, external_id, body, score, rank FROM inf_ir_shard.search(query_embedding, k, corpus, filter);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_corpus_model_on(shard integer, corpus text) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards_search';
    RUN ON shard;
    SELECT inf_ir_shard.corpus_model(corpus);
$$;

-- Each shard re-ranks its own candidates (PL/Proxy sends each shard only
-- the external ids that hash to it).
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_rerank(query_embedding real[], corpus text, external_ids text[])
RETURNS TABLE(passage_id bigint, external_id text, body text, score real)
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards_search';
    SPLIT external_ids;
    RUN ON hashtext(external_ids);
    SELECT passage_id, external_id, body, score FROM inf_ir_shard.rerank(query_embedding, corpus, external_ids, NULL);
$$;

CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_corpus_model(corpus text) RETURNS SETOF text
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards_search';
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
DROP FUNCTION IF EXISTS inf_ir_proxy.shard_put_passages(text, text[], text[], text[]);
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_put_passages(corpus text, external_ids text[], bodies text[],
    titles text[], metadatas jsonb[]) RETURNS SETOF bigint
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    SPLIT external_ids, bodies, titles, metadatas;
    RUN ON hashtext(external_ids);
    SELECT inf_ir_shard.put_passages(corpus, external_ids, bodies, titles, metadatas);
$$;

-- titles and metadatas (one jsonb object each) may be NULL (PL/Proxy
-- splits only arrays of one length); the number of passages stored.
DROP FUNCTION IF EXISTS inf_ir_proxy.put_passages(text, text[], text[], text[]);
CREATE OR REPLACE FUNCTION inf_ir_proxy.put_passages(corpus text, external_ids text[], bodies text[],
    titles text[] DEFAULT NULL, metadatas jsonb[] DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT sum(n)::bigint FROM inf_ir_proxy.shard_put_passages(corpus, external_ids, bodies,
        coalesce(titles, array_fill(NULL::text, ARRAY[cardinality(external_ids)])),
        coalesce(metadatas, array_fill('{}'::jsonb, ARRAY[cardinality(external_ids)]))) n
$$;

-- Passages with embeddings made elsewhere (see inf_ir_shard.put_embedded_passages):
-- moving a corpus onto shards without embedding it again.
DROP FUNCTION IF EXISTS inf_ir_proxy.shard_put_embedded_passages(text, text[], text[], text[], text[], text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_put_embedded_passages(corpus text, external_ids text[], bodies text[],
    titles text[], embeddings text[], fingerprint text, metadatas jsonb[]) RETURNS SETOF bigint
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    SPLIT external_ids, bodies, titles, embeddings, metadatas;
    RUN ON hashtext(external_ids);
    SELECT inf_ir_shard.put_embedded_passages(corpus, external_ids, bodies, titles, embeddings, fingerprint, metadatas);
$$;

DROP FUNCTION IF EXISTS inf_ir_proxy.put_embedded_passages(text, text[], text[], text[], text[], text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.put_embedded_passages(corpus text, external_ids text[], bodies text[],
    titles text[], embeddings text[], fingerprint text, metadatas jsonb[] DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT sum(n)::bigint FROM inf_ir_proxy.shard_put_embedded_passages(corpus, external_ids, bodies,
        coalesce(titles, array_fill(NULL::text, ARRAY[cardinality(external_ids)])), embeddings, fingerprint,
        coalesce(metadatas, array_fill('{}'::jsonb, ARRAY[cardinality(external_ids)]))) n
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

-- The model of a corpus that is on every shard, or an ERROR.
CREATE OR REPLACE FUNCTION inf_ir_proxy.corpus_model(corpus text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE models text[];
BEGIN
    SELECT array_agg(DISTINCT m) INTO models FROM inf_ir_proxy.shard_corpus_model(corpus_model.corpus) m;
    IF models IS NULL OR array_position(models, NULL) IS NOT NULL OR cardinality(models) <> 1 THEN
        RAISE EXCEPTION 'corpus "%" is not on every shard with one model (models: %)', corpus_model.corpus, models
            USING ERRCODE = 'undefined_object', HINT = 'create it with inf_ir_proxy.create_corpus(name)';
    END IF;
    RETURN models[1];
END $$;

-- A shard's hit, gathered before the merge.
DO $$ BEGIN
    CREATE TYPE inf_ir_proxy.hit AS (external_id text, body text, score real, shard_passage_id bigint);
EXCEPTION WHEN duplicate_object THEN NULL;  -- the file was run before
END $$;

-- The k every search takes, checked on the proxy (as inf_search checks it
-- on one server) before any shard is asked.
CREATE OR REPLACE FUNCTION inf_ir_proxy.check_k(k integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'k is the number of passages to return, e.g. 10';
    END IF;
END $$;

-- The shards' hits merged: the best k (all with k NULL), ties by
-- external_id (passage ids are per shard), ranked from 1.
CREATE OR REPLACE FUNCTION inf_ir_proxy.merge(hits inf_ir_proxy.hit[], k integer)
RETURNS TABLE(external_id text, body text, score real, rank integer, shard_passage_id bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT h.external_id, h.body, h.score,
           (row_number() OVER (ORDER BY h.score DESC, h.external_id))::integer, h.shard_passage_id
    FROM unnest(hits) h
    ORDER BY h.score DESC, h.external_id
    LIMIT k
$$;

-- Every shard's top k for a query vector (all shards at once), to merge.
DROP FUNCTION IF EXISTS inf_ir_proxy.shard_hits(real[], integer, text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.shard_hits(query_embedding real[], k integer, corpus text, filter jsonb)
RETURNS inf_ir_proxy.hit[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(ROW(s.external_id, s.body, s.score, s.passage_id)::inf_ir_proxy.hit), '{}')
    FROM inf_ir_proxy.shard_search(query_embedding, k, corpus, filter) s
$$;

-- Search a sharded corpus: the query embedded once here, with the corpus's
-- model; every shard's top k (inf_search_vector there), all shards at
-- once; the best k of them, ties by external_id (passage ids are per shard). A shard that is
-- down, fails or passes set_shards' search_timeout makes it an ERROR
-- naming the shard; with partial => true the search then asks the shards
-- one by one and returns what the others have, with a NOTICE naming the
-- ones missing. This session's cancel and statement_timeout are never
-- turned into partial results: they end the search on every shard. filter
-- is inf_search's (metadata @> filter), applied on every shard.
DROP FUNCTION IF EXISTS inf_ir_proxy.inf_search(text, text, integer, text, boolean);
CREATE OR REPLACE FUNCTION inf_ir_proxy.inf_search(instruction text, query text, k integer DEFAULT 10,
    corpus text DEFAULT 'default', partial boolean DEFAULT false, filter jsonb DEFAULT NULL)
RETURNS TABLE(external_id text, body text, score real, rank integer, shard_passage_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    model text;
    q real[];
    hits inf_ir_proxy.hit[];
    missing text[] := '{}';
    failure text;
    n integer;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'inf_ir_proxy.inf_search(instruction, query, k, corpus)';
    END IF;
    PERFORM inf_ir_proxy.check_k(k);
    IF NOT coalesce(partial, false) THEN
        q := inf_embed_query(instruction, query, inf_ir_proxy.corpus_model(inf_search.corpus));
        RETURN QUERY SELECT * FROM inf_ir_proxy.inf_search_vector(q, k, inf_search.corpus, inf_search.filter);
        RETURN;
    END IF;
    -- Partial: all shards at once first, one by one only when that fails.
    -- WHEN OTHERS does not catch query_canceled (cancel, statement_timeout).
    BEGIN
        model := inf_ir_proxy.corpus_model(inf_search.corpus);
        q := inf_embed_query(instruction, query, model);
        hits := inf_ir_proxy.shard_hits(q, k, inf_search.corpus, inf_search.filter);
    EXCEPTION WHEN OTHERS THEN  -- not query_canceled: this session's cancel ends the search
        hits := NULL;
    END;
    IF hits IS NULL THEN
        hits := '{}';
        n := inf_ir_proxy.shard_count();
        IF n = 0 THEN
            RAISE EXCEPTION 'no shards are set' USING ERRCODE = 'undefined_object',
                HINT = 'a superuser sets them with inf_ir_proxy.set_shards(conninfos)';
        END IF;
        FOR shard IN 0 .. n - 1 LOOP
            BEGIN
                IF q IS NULL THEN
                    model := inf_ir_proxy.shard_corpus_model_on(shard, inf_search.corpus);
                    IF model IS NULL THEN
                        RAISE EXCEPTION 'corpus "%" is not on this shard', inf_search.corpus;
                    END IF;
                    q := inf_embed_query(instruction, query, model);
                ELSIF model IS NOT NULL
                      AND inf_ir_proxy.shard_corpus_model_on(shard, inf_search.corpus) IS DISTINCT FROM model THEN
                    RAISE EXCEPTION 'corpus "%" has another model on this shard', inf_search.corpus;
                END IF;
                hits := hits || ARRAY(SELECT ROW(s.external_id, s.body, s.score, s.passage_id)::inf_ir_proxy.hit
                                      FROM inf_ir_proxy.shard_search_on(shard, q, k, inf_search.corpus, inf_search.filter) s);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
                missing := missing || format('shard %s (%s)', shard, split_part(failure, E'\n', 1));
            END;
        END LOOP;
        IF cardinality(missing) = n THEN
            RAISE EXCEPTION 'no shard of corpus "%" answered: %', inf_search.corpus, array_to_string(missing, '; ')
                USING ERRCODE = 'connection_failure', HINT = 'check the shard servers (inf_ir_proxy.set_shards)';
        ELSIF cardinality(missing) > 0 THEN
            RAISE NOTICE 'inf_ir_proxy.inf_search: results from % of % shards; missing: %',
                n - cardinality(missing), n, array_to_string(missing, '; ');
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM inf_ir_proxy.merge(hits, k);
END $$;

-- Search a sharded corpus by a query vector made elsewhere (with the
-- corpus's model): every shard's top k, merged as in inf_search.
DROP FUNCTION IF EXISTS inf_ir_proxy.inf_search_vector(real[], integer, text);
CREATE OR REPLACE FUNCTION inf_ir_proxy.inf_search_vector(query_embedding real[], k integer DEFAULT 10,
    corpus text DEFAULT 'default', filter jsonb DEFAULT NULL)
RETURNS TABLE(external_id text, body text, score real, rank integer, shard_passage_id bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION 'query_embedding must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'pass inf_embed_query(instruction, query, model)';
    END IF;
    PERFORM inf_ir_proxy.check_k(k);
    RETURN QUERY SELECT * FROM inf_ir_proxy.merge(
        inf_ir_proxy.shard_hits(query_embedding, k, inf_search_vector.corpus, inf_search_vector.filter), k);
END $$;

-- Re-rank candidates of a sharded corpus by external id (e.g. a full-text
-- search's top 100): the query embedded once here; each shard scores the
-- candidates it holds (embedding on the fly those without a current
-- embedding, as inf_rerank does); all of them best first, or the best k.
CREATE OR REPLACE FUNCTION inf_ir_proxy.inf_rerank(instruction text, query text, candidates text[],
    k integer DEFAULT NULL, corpus text DEFAULT 'default')
RETURNS TABLE(external_id text, body text, score real, rank integer, shard_passage_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    wanted text[];
    hits inf_ir_proxy.hit[];
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'inf_ir_proxy.inf_rerank(instruction, query, candidates, k, corpus)';
    END IF;
    IF k IS NOT NULL AND (k < 1 OR k > 10000) THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, not %', k
            USING ERRCODE = 'invalid_parameter_value', HINT = 'k is the number of passages to return; NULL for all';
    END IF;
    SELECT array_agg(DISTINCT c) INTO wanted FROM unnest(candidates) c WHERE c IS NOT NULL;
    IF wanted IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(ROW(s.external_id, s.body, s.score, s.passage_id)::inf_ir_proxy.hit) INTO hits
    FROM inf_ir_proxy.shard_rerank(inf_embed_query(instruction, query, inf_ir_proxy.corpus_model(inf_rerank.corpus)),
                                   inf_rerank.corpus, wanted) s;
    IF coalesce(cardinality(hits), 0) < cardinality(wanted) THEN
        RAISE NOTICE 'inf_ir_proxy.inf_rerank: % of % candidates are not passages of corpus "%"',
            cardinality(wanted) - coalesce(cardinality(hits), 0), cardinality(wanted), inf_rerank.corpus;
    END IF;
    RETURN QUERY SELECT * FROM inf_ir_proxy.merge(hits, k);
END $$;

-- inf_filter_index for the corpus on every shard: each shard's name for it.
CREATE OR REPLACE FUNCTION inf_ir_proxy.filter_index(corpus text, filter jsonb) RETURNS SETOF text
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT inf_filter_index(corpus, filter);
$$;

-- inf_drop_filter_index on every shard: whether each had one.
CREATE OR REPLACE FUNCTION inf_ir_proxy.drop_filter_index(corpus text, filter jsonb) RETURNS SETOF boolean
LANGUAGE plproxy AS $$
    CLUSTER 'inf_ir_shards';
    RUN ON ALL;
    SELECT inf_drop_filter_index(corpus, filter);
$$;
