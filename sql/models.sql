-- inf_ir model registry. Tables live in the schema "inf_ir"; functions in the
-- schema the extension is created in (public by default).
CREATE SCHEMA inf_ir;
GRANT USAGE ON SCHEMA inf_ir TO PUBLIC;

CREATE TABLE inf_ir.models (
    name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    folder           text NOT NULL CHECK (folder LIKE '/%'),
    onnx_file        text NOT NULL,
    tokenizer_file   text NOT NULL,
    query_template   text NOT NULL CHECK (strpos(query_template, '{query}') > 0),
    passage_template text NOT NULL CHECK (strpos(passage_template, '{passage}') > 0),
    pooling          text NOT NULL CHECK (pooling IN ('mean', 'cls', 'last')),
    dimension        integer NOT NULL CHECK (dimension > 0),
    max_tokens       integer NOT NULL CHECK (max_tokens > 2),
    pad_token_id     integer NOT NULL DEFAULT 0 CHECK (pad_token_id >= 0),
    padding_side     text NOT NULL DEFAULT 'right' CHECK (padding_side IN ('right', 'left')),
    fingerprint      text NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE inf_ir.models IS
    'Embedding models known to inf_ir; written by inf_register_model() (superusers only).';
-- Readable by all (which models exist, their templates); written only through
-- the superuser-only registration function.
REVOKE ALL ON inf_ir.models FROM PUBLIC;
GRANT SELECT ON inf_ir.models TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('inf_ir.models', '');
