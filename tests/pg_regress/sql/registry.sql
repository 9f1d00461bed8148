-- Model registry: registration, defaults from the folder, privileges, errors.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
RESET client_min_messages;

-- Register a folder whose config_sentence_transformers.json has prompts:
-- they become the templates' prefixes.
SELECT name, dimension, pooling, max_tokens, query_template, passage_template
FROM inf_register_model('prompted', '/tmp/inf_ir_fixtures/prompts');
SELECT inf_embed('text', 'prompted') = inf_embed('passage: text') AS passage_prefix,
       inf_embed_query('i', 'q', 'prompted') = inf_embed('query: q i') AS query_prefix;

-- Overrides: templates, pooling, max_tokens.
SELECT name, pooling, max_tokens, query_template
FROM inf_register_model('e5form', '/tmp/inf_ir_fixtures/prompts',
       query_template => 'Instruct: {instruction}\nQuery: {query}', passage_template => '{passage}',
       pooling => 'cls', max_tokens => 128);
SELECT inf_embed_query(NULL, 'q', 'e5form') = inf_embed('q', 'e5form') AS no_instruction_drops_label;

-- Re-registering replaces the row.
SELECT name, max_tokens FROM inf_register_model('e5form', '/tmp/inf_ir_fixtures/prompts', max_tokens => 64);
SELECT name, max_tokens FROM inf_ir.models ORDER BY name;

-- Which model runs when none is named.
SET inf_ir.default_model = 'e5form';
SELECT inf_embed('z') = inf_embed('z', 'e5form') AS default_setting_used;
RESET inf_ir.default_model;

-- Bad input: each a clear ERROR, and the session goes on.
SELECT inf_embed('x', 'nope');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/does-not-exist');
SELECT * FROM inf_register_model('bad', 'relative/folder');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/noonnx');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/corrupt');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/prompts', query_template => '{instruction} only');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/prompts', passage_template => 'no slot');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/prompts', pooling => 'max');
SELECT * FROM inf_register_model('bad', '/tmp/inf_ir_fixtures/prompts', max_tokens => 1);
SELECT * FROM inf_register_model('bad name!', '/tmp/inf_ir_fixtures/prompts');
SELECT * FROM inf_register_model(NULL, '/tmp/inf_ir_fixtures/prompts');
SELECT count(*) AS bad_rows FROM inf_ir.models WHERE name LIKE 'bad%';
SELECT 'session still works' AS status, array_length(inf_embed('ok'), 1) AS dims;

-- Files changed after registration are detected (fingerprint).
SELECT name FROM inf_register_model('changed', '/tmp/inf_ir_fixtures/changed');
\! echo ' ' >> /tmp/inf_ir_fixtures/changed/config.json
\c
\set VERBOSITY sqlstate
SELECT inf_embed('x', 'changed');
\set VERBOSITY terse

-- Non-superusers: may embed, may not register or point the server at files.
CREATE ROLE inf_ir_regress_user LOGIN;
SET ROLE inf_ir_regress_user;
SELECT array_length(inf_embed('allowed'), 1) AS user_can_embed;
SELECT * FROM inf_register_model('evil', '/tmp/inf_ir_fixtures/prompts');
SELECT inf_unregister_model('minilm');
SET inf_ir.onnxruntime_library = '/tmp/evil.so';
SET inf_ir.server_models = 'evil=/tmp';
SET inf_ir.onnxruntime_cuda = on;
INSERT INTO inf_ir.models SELECT * FROM inf_ir.models;
SELECT count(*) > 0 AS user_can_read_registry FROM inf_ir.models;
RESET ROLE;
DROP ROLE inf_ir_regress_user;

-- Unregister.
SELECT inf_unregister_model('prompted'), inf_unregister_model('prompted');
SELECT inf_unregister_model('e5form'), inf_unregister_model('changed');
SELECT name FROM inf_ir.models ORDER BY name;
