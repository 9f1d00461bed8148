-- Run a stage over everything pending (or max_items of it, or what filter
-- keeps), committing after each batch. Not SECURITY DEFINER and without a
-- SET clause (which would forbid COMMIT): every name is qualified.
-- mode => 'batch' submits Batch API batches instead and returns;
-- inf_synthesize_collect() ingests them.
CREATE PROCEDURE @extschema@.inf_synthesize(stage text, endpoint text, max_items integer DEFAULT NULL,
    filter text DEFAULT NULL, batch_size integer DEFAULT NULL, prompt_version integer DEFAULT NULL,
    retry_failed boolean DEFAULT false, mode text DEFAULT 'direct')
LANGUAGE plpgsql AS $$
DECLARE
    run bigint;
    n bigint;
    to_send bigint := 0;
    refused bigint;
    code text;
    message text;
    hint text;
BEGIN
    run := @extschema@.inf_llm_run_start(stage, endpoint, max_items, filter, batch_size, prompt_version,
                                         retry_failed, mode);
    COMMIT;
    LOOP
        BEGIN
            IF mode = 'batch' AND to_send > 0 THEN
                -- The claim is committed; now make the endpoint's batch. A
                -- send that fails leaves it 'preparing' for inf_synthesize_collect.
                IF @extschema@.inf_llm_batch_send(to_send) = 'refused' THEN
                    refused := to_send;
                END IF;
                to_send := 0;
                n := 1;
            ELSIF mode = 'batch' THEN
                n := @extschema@.inf_llm_batch_prepare(run);
                to_send := n;
            ELSE
                n := @extschema@.inf_llm_run_batch(run);
            END IF;
        EXCEPTION WHEN query_canceled OR others THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            n := -1;
        END;
        IF n < 0 THEN
            -- The batch is rolled back; record why the run ended, then raise it again.
            UPDATE inf_ir.llm_runs r
            SET state = CASE WHEN code = '57014' THEN 'cancelled' ELSE 'failed' END,
                error = message, updated_at = pg_catalog.clock_timestamp(), finished_at = pg_catalog.clock_timestamp()
            WHERE r.run_id = run;
            COMMIT;
            RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message,
                HINT = pg_catalog.concat_ws(' ', nullif(hint, ''), pg_catalog.format(
                    'Run %s stopped; what it committed stays, and CALL inf_synthesize again goes on from there.', run));
        END IF;
        COMMIT;
        IF refused IS NOT NULL THEN
            -- The endpoint made no batch (the claim is released): stop, rather than claim the same items again.
            SELECT b.error INTO message FROM inf_ir.llm_batches b WHERE b.batch_id = refused;
            message := pg_catalog.format('LLM endpoint "%s" made no batch: %s', endpoint, message);
            UPDATE inf_ir.llm_runs r SET state = 'failed', error = message,
                updated_at = pg_catalog.clock_timestamp(), finished_at = pg_catalog.clock_timestamp()
            WHERE r.run_id = run;
            COMMIT;
            RAISE EXCEPTION USING ERRCODE = 'external_routine_exception', MESSAGE = message,
                HINT = 'its items are pending again; check that the endpoint offers the Batch API, or run without mode => ''batch''';
        END IF;
        EXIT WHEN n = 0;
    END LOOP;
    UPDATE inf_ir.llm_runs r
    SET state = CASE WHEN o.has_open THEN 'submitted' ELSE 'done' END,
        finished_at = CASE WHEN o.has_open THEN NULL ELSE pg_catalog.clock_timestamp() END
    FROM (SELECT EXISTS (SELECT 1 FROM inf_ir.llm_batches b WHERE b.run_id = run AND b.ingested_at IS NULL) AS has_open) o
    WHERE r.run_id = run;
    COMMIT;
END $$;
REVOKE EXECUTE ON PROCEDURE @extschema@.inf_synthesize(text, text, integer, text, integer, integer, boolean, text)
    FROM PUBLIC;

-- Poll every open Batch API batch once, ingest those the endpoint is done
-- with (each committed on its own), and with wait => true go on every
-- poll_seconds until none is open. Safe to run again at any time, after a
-- disconnect or a restart: what is ingested stays ingested.
CREATE PROCEDURE @extschema@.inf_synthesize_collect(wait boolean DEFAULT true, poll_seconds integer DEFAULT 30)
LANGUAGE plpgsql AS $$
DECLARE
    b bigint;
BEGIN
    IF wait IS NULL OR poll_seconds IS NULL OR poll_seconds < 1 THEN
        RAISE EXCEPTION 'wait must not be NULL and poll_seconds must be at least 1'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'for example CALL inf_synthesize_collect(true, 60)';
    END IF;
    LOOP
        b := 0;
        LOOP
            SELECT min(x.batch_id) INTO b FROM inf_ir.llm_batches x WHERE x.ingested_at IS NULL AND x.batch_id > b;
            EXIT WHEN b IS NULL;
            PERFORM @extschema@.inf_llm_batch_check(b);
            COMMIT;
        END LOOP;
        EXIT WHEN NOT wait OR NOT EXISTS (SELECT 1 FROM inf_ir.llm_batches x WHERE x.ingested_at IS NULL);
        PERFORM pg_catalog.pg_sleep(poll_seconds);
    END LOOP;
END $$;
REVOKE EXECUTE ON PROCEDURE @extschema@.inf_synthesize_collect(boolean, integer) FROM PUBLIC;
