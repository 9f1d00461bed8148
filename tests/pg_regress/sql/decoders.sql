-- Decoder model folders: defaults read from the folder (pooling, padding
-- side), and the folders inf_ir refuses, each with the file and the fix.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;

-- A decoder exported as optimum-cli does (no 1_Pooling): mean pooling would
-- be wrong, so registration asks to be told.
SELECT * FROM inf_register_model('dec', '/tmp/inf_ir_fixtures/decoder_optimum');
SELECT name, dimension, pooling, max_tokens, padding_side
FROM inf_register_model('dec', '/tmp/inf_ir_fixtures/decoder_optimum', pooling => 'last', max_tokens => 512);

-- tokenizer_config.json's padding_side is read; left and right padding give
-- each text the same vector (position ids from the mask).
SELECT name, pooling, padding_side
FROM inf_register_model('dec_left', '/tmp/inf_ir_fixtures/decoder_left', pooling => 'last', max_tokens => 512);
WITH texts(t) AS (VALUES (ARRAY['short', 'a longer passage, with more tokens than the short one has, about dosage']::text[])),
     r AS (SELECT ord, embedding FROM texts, inf_embed_many(t, 'dec')),
     l AS (SELECT ord, embedding FROM texts, inf_embed_many(t, 'dec_left'))
SELECT r.ord, (SELECT sum(x * y) FROM unnest(r.embedding, l.embedding) AS u(x, y)) > 0.99999 AS same_vector
FROM r JOIN l USING (ord) ORDER BY r.ord;
SELECT padding_side FROM inf_register_model('dec_left', '/tmp/inf_ir_fixtures/decoder_left', pooling => 'last',
                                            padding_side => 'right');
SELECT name, pooling, padding_side FROM inf_ir.models WHERE name LIKE 'dec%' ORDER BY name;

-- Refused, nothing stored:
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/decoder_left', pooling => 'last', padding_side => 'middle');
-- a graph that numbers positions itself, padded on the left;
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/encoder_left');
-- add_eos_token that the tokenizer would not honour;
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/decoder_eos', pooling => 'last');
-- a graph with logits and no token states;
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/logits_only');
-- weights larger than the memory left (a sparse 1 TB model.onnx_data):
-- out_of_memory before ONNX Runtime reads a byte (figures vary by machine).
DO $$
DECLARE hint text;
BEGIN
    PERFORM * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/too_large');
EXCEPTION WHEN out_of_memory THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RAISE NOTICE '%', regexp_replace(SQLERRM, '[0-9]+\.[0-9] GB', 'N GB', 'g');
    RAISE NOTICE 'hint: %', hint;
END $$;
SELECT count(*) AS bad_rows FROM inf_ir.models WHERE name = 'bad';

SELECT inf_unregister_model('dec'), inf_unregister_model('dec_left');
