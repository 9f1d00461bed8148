-- The InF-IR dataset: seed (MS MARCO-style queries, passages, qrels) and
-- tuple groups (a positive plus its instruction- and query-negatives), with
-- provenance, status and stored validation scores. Constraints make bad rows
-- impossible: a negative cannot exist without its group's positive, texts
-- are never blank, a negative must alter its field.
CREATE TABLE inf_ir.seed_queries (
    query_id text PRIMARY KEY,
    text     text NOT NULL CHECK (btrim(text) <> ''),
    metadata jsonb NOT NULL DEFAULT '{}',
    source   text NOT NULL DEFAULT 'msmarco'
);
CREATE TABLE inf_ir.seed_passages (
    passage_id text PRIMARY KEY,
    text       text NOT NULL CHECK (btrim(text) <> ''),
    source     text NOT NULL DEFAULT 'msmarco'
);
CREATE TABLE inf_ir.seed_qrels (
    query_id   text NOT NULL REFERENCES inf_ir.seed_queries ON DELETE CASCADE,
    passage_id text NOT NULL REFERENCES inf_ir.seed_passages ON DELETE CASCADE,
    relevance  integer NOT NULL CHECK (relevance >= 0),
    PRIMARY KEY (query_id, passage_id)
);

-- One released InF-IR row = one group: the positive is stored in the group,
-- each negative in inf_ir.tuple_negatives with only what it alters.
CREATE TABLE inf_ir.tuple_groups (
    group_id      bigserial PRIMARY KEY,
    seed_query_id text REFERENCES inf_ir.seed_queries ON DELETE SET NULL,
    query         text NOT NULL CHECK (btrim(query) <> ''),        -- query+
    instruction   text NOT NULL CHECK (btrim(instruction) <> ''),  -- instruction+
    passage       text NOT NULL CHECK (btrim(passage) <> ''),      -- passage+
    source        text NOT NULL,
    generator     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    -- The judged seed passage the positive was made from, when known.
    seed_passage_id text REFERENCES inf_ir.seed_passages ON DELETE SET NULL
);
-- The same positive is never stored twice (idempotent imports); hashed
-- because passages can exceed a btree entry.
CREATE UNIQUE INDEX tuple_groups_positive_key
    ON inf_ir.tuple_groups (md5(query || chr(1) || instruction || chr(1) || passage));
CREATE INDEX tuple_groups_status ON inf_ir.tuple_groups (status);
CREATE INDEX tuple_groups_seed_pair ON inf_ir.tuple_groups (seed_query_id, seed_passage_id);

CREATE TABLE inf_ir.tuple_negatives (
    group_id   bigint NOT NULL REFERENCES inf_ir.tuple_groups ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('instruction', 'query')),
    altered    text NOT NULL CHECK (btrim(altered) <> ''),  -- instruction- or query-
    passage    text NOT NULL CHECK (btrim(passage) <> ''),  -- the passage that fits the altered pair
    source     text NOT NULL,
    generator  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, kind)
);

-- A negative must differ from the positive in what it alters.
CREATE FUNCTION inf_ir.tuple_negatives_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE g record;
BEGIN
    SELECT query, instruction INTO g FROM inf_ir.tuple_groups WHERE group_id = NEW.group_id;
    IF (NEW.kind = 'instruction' AND NEW.altered = g.instruction)
       OR (NEW.kind = 'query' AND NEW.altered = g.query) THEN
        RAISE EXCEPTION 'the % negative of group % does not alter the % (it equals the positive''s)',
            NEW.kind, NEW.group_id, NEW.kind
            USING ERRCODE = 'check_violation', HINT = 'a negative changes the positive''s instruction or query';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tuple_negatives_check BEFORE INSERT OR UPDATE ON inf_ir.tuple_negatives
    FOR EACH ROW EXECUTE FUNCTION inf_ir.tuple_negatives_check();

-- Validation scores, one row per group and evaluator, kept so a threshold
-- can be changed and re-applied without re-embedding. Scores are cosine
-- similarities s(query side, passage):
--   pos_pos   s(q+ i+, p+)    ineg_pos  s(q+ i-, p+)    qneg_pos  s(q- i+, p+)
--   ineg_own  s(q+ i-, p_i-)  qneg_own  s(q- i+, p_q-)
CREATE TABLE inf_ir.validation_scores (
    group_id    bigint NOT NULL REFERENCES inf_ir.tuple_groups ON DELETE CASCADE,
    evaluator   text NOT NULL,
    pos_pos     real NOT NULL,
    ineg_pos    real NOT NULL,
    qneg_pos    real NOT NULL,
    ineg_own    real NOT NULL,
    qneg_own    real NOT NULL,
    -- An LLM judge's flag: the group could be judged either way (rejected).
    ambiguous   boolean,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, evaluator)
);

-- Runs and qrels for evaluation in SQL.
CREATE TABLE inf_ir.eval_runs (
    run_name text NOT NULL,
    query_id text NOT NULL,
    doc_id   text NOT NULL,
    score    double precision NOT NULL,
    rank     integer NOT NULL CHECK (rank > 0),
    PRIMARY KEY (run_name, query_id, doc_id)
);
CREATE TABLE inf_ir.eval_qrels (
    qrels_name text NOT NULL,
    query_id   text NOT NULL,
    doc_id     text NOT NULL,
    relevance  integer NOT NULL,
    PRIMARY KEY (qrels_name, query_id, doc_id)
);

REVOKE ALL ON inf_ir.seed_queries, inf_ir.seed_passages, inf_ir.seed_qrels, inf_ir.tuple_groups,
    inf_ir.tuple_negatives, inf_ir.validation_scores, inf_ir.eval_runs, inf_ir.eval_qrels FROM PUBLIC;
GRANT SELECT ON inf_ir.seed_queries, inf_ir.seed_passages, inf_ir.seed_qrels, inf_ir.tuple_groups,
    inf_ir.tuple_negatives, inf_ir.validation_scores, inf_ir.eval_runs, inf_ir.eval_qrels TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.seed_queries', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.seed_passages', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.seed_qrels', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.tuple_groups', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.tuple_negatives', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.validation_scores', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.eval_runs', '');
SELECT pg_catalog.pg_extension_config_dump('inf_ir.eval_qrels', '');

-- Groups in the released InF-IR row layout.
CREATE VIEW inf_ir.inf_ir_rows AS
SELECT g.group_id, g.status,
       g.query AS query_positive, g.instruction AS instruction_positive, g.passage AS document_positive,
       qneg.altered AS query_negative, ineg.altered AS instruction_negative,
       ineg.passage AS hard_negative_document_1, qneg.passage AS hard_negative_document_2
FROM inf_ir.tuple_groups g
LEFT JOIN inf_ir.tuple_negatives ineg ON ineg.group_id = g.group_id AND ineg.kind = 'instruction'
LEFT JOIN inf_ir.tuple_negatives qneg ON qneg.group_id = g.group_id AND qneg.kind = 'query';
GRANT SELECT ON inf_ir.inf_ir_rows TO PUBLIC;

-- Add a positive tuple; returns its group (the existing one if it is already stored).
CREATE FUNCTION @extschema@.inf_add_positive(instruction text, query text, passage text,
    source text DEFAULT 'manual', generator text DEFAULT 'manual', seed_query_id text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE id bigint;
BEGIN
    INSERT INTO inf_ir.tuple_groups(seed_query_id, query, instruction, passage, source, generator)
    VALUES (inf_add_positive.seed_query_id, inf_add_positive.query, inf_add_positive.instruction,
            inf_add_positive.passage, inf_add_positive.source, inf_add_positive.generator)
    ON CONFLICT ((md5(query || chr(1) || instruction || chr(1) || passage))) DO NOTHING
    RETURNING group_id INTO id;
    IF id IS NULL THEN
        SELECT g.group_id INTO id FROM inf_ir.tuple_groups g
        WHERE md5(g.query || chr(1) || g.instruction || chr(1) || g.passage)
            = md5(inf_add_positive.query || chr(1) || inf_add_positive.instruction || chr(1) || inf_add_positive.passage);
    END IF;
    RETURN id;
END $$;

-- Add (or replace) the instruction- or query-negative of a group.
CREATE FUNCTION @extschema@.inf_add_negative(group_id bigint, kind text, altered text, passage text,
    source text DEFAULT 'manual', generator text DEFAULT 'manual')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM inf_ir.tuple_groups g WHERE g.group_id = inf_add_negative.group_id) THEN
        RAISE EXCEPTION 'group % does not exist: a negative needs its positive', inf_add_negative.group_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'add the positive first with inf_add_positive()';
    END IF;
    INSERT INTO inf_ir.tuple_negatives(group_id, kind, altered, passage, source, generator)
    VALUES (inf_add_negative.group_id, inf_add_negative.kind, inf_add_negative.altered,
            inf_add_negative.passage, inf_add_negative.source, inf_add_negative.generator)
    ON CONFLICT ON CONSTRAINT tuple_negatives_pkey DO UPDATE
        SET altered = EXCLUDED.altered, passage = EXCLUDED.passage, source = EXCLUDED.source,
            generator = EXCLUDED.generator, created_at = now();
    -- New inputs invalidate earlier verdicts.
    UPDATE inf_ir.tuple_groups g SET status = 'pending' WHERE g.group_id = inf_add_negative.group_id;
    DELETE FROM inf_ir.validation_scores v WHERE v.group_id = inf_add_negative.group_id;
END $$;

-- Re-apply a margin to stored scores (no embedding): a group is accepted when
-- the positive passage prefers the true pair over both altered pairs, and each
-- negative passage prefers its own altered pair over the positive passage,
-- each by at least margin, and no judge found it ambiguous. Groups without
-- both negatives or scores stay pending.
CREATE FUNCTION @extschema@.inf_apply_validation(margin real DEFAULT 0.0, evaluator text DEFAULT NULL)
RETURNS TABLE(accepted bigint, rejected bigint, pending bigint)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
BEGIN
    IF inf_apply_validation.margin IS NULL THEN
        RAISE EXCEPTION 'margin must not be NULL' USING ERRCODE = 'invalid_parameter_value', HINT = 'for example 0.05';
    END IF;
    UPDATE inf_ir.tuple_groups g
    SET status = CASE WHEN v.ambiguous IS NOT TRUE
                           AND v.pos_pos - v.ineg_pos >= inf_apply_validation.margin
                           AND v.pos_pos - v.qneg_pos >= inf_apply_validation.margin
                           AND v.ineg_own - v.ineg_pos >= inf_apply_validation.margin
                           AND v.qneg_own - v.qneg_pos >= inf_apply_validation.margin
                      THEN 'accepted' ELSE 'rejected' END
    FROM inf_ir.validation_scores v
    WHERE v.group_id = g.group_id
      AND v.evaluator = COALESCE(inf_apply_validation.evaluator,
            (SELECT v2.evaluator FROM inf_ir.validation_scores v2 WHERE v2.group_id = g.group_id
             ORDER BY v2.computed_at DESC LIMIT 1));
    RETURN QUERY SELECT count(*) FILTER (WHERE t.status = 'accepted'), count(*) FILTER (WHERE t.status = 'rejected'),
                        count(*) FILTER (WHERE t.status = 'pending')
                 FROM inf_ir.tuple_groups t;
END $$;

-- Evaluate a query set end to end: search `corpus` for every query (with its
-- instruction, if any), store the run as `run_name`, score it against `qrels_name`.
CREATE FUNCTION @extschema@.inf_evaluate_search(run_name text, corpus text, qrels_name text,
    query_ids text[], queries text[], instructions text[] DEFAULT NULL, k integer DEFAULT 100)
RETURNS TABLE(metric text, value double precision, n_queries integer)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(inf_evaluate_search.query_ids) IS DISTINCT FROM cardinality(inf_evaluate_search.queries)
       OR (inf_evaluate_search.instructions IS NOT NULL
           AND cardinality(inf_evaluate_search.instructions) <> cardinality(inf_evaluate_search.queries)) THEN
        RAISE EXCEPTION 'query_ids, queries and instructions must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM inf_ir.eval_runs r WHERE r.run_name = inf_evaluate_search.run_name;
    INSERT INTO inf_ir.eval_runs(run_name, query_id, doc_id, score, rank)
    SELECT inf_evaluate_search.run_name, q.qid, s.external_id, s.score, s.rank
    FROM unnest(inf_evaluate_search.query_ids, inf_evaluate_search.queries,
                COALESCE(inf_evaluate_search.instructions,
                         array_fill(NULL::text, ARRAY[cardinality(inf_evaluate_search.queries)])))
         AS q(qid, body, instruction),
         LATERAL @extschema@.inf_search(q.instruction, q.body, inf_evaluate_search.k, inf_evaluate_search.corpus) s;
    RETURN QUERY SELECT * FROM @extschema@.inf_evaluate(inf_evaluate_search.run_name, qrels_name, 10);
END $$;
