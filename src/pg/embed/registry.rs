//! Registering models: `inf_register_model` (superusers only; the model is
//! loaded once to prove it runs where it will be used),
//! `inf_unregister_model`, and the server's own models at CREATE EXTENSION.
//! Reading the registry is `models`.

use super::models::ModelRow;
use crate::engine::embed::fingerprint::model_fingerprint;
use crate::engine::embed::model_folder::{self, FolderDefaults};
use crate::engine::embed::padded_batch::PaddingSide;
use crate::engine::embed::template::Template;
use crate::engine::{EngineError, ModelSpec, Pooling};
use crate::pg::embed::inference;
use crate::pg::errors::{raise, raise_with, warn, OrRaise};
use crate::pg::gucs;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::path::Path;

pgrx::extension_sql_file!("../../../sql/models.sql", name = "models_table", bootstrap);

fn require_superuser(what: &str) {
    if !unsafe { pg_sys::superuser() } {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("only superusers may {what}"),
            "registering a model points the server at files; ask a superuser to run it",
        );
    }
}

/// Register (or re-register) the sentence-transformers folder `folder` as
/// `name`. Defaults come from the folder's own config files; the model is
/// loaded once to check that it runs. Superusers only.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_register_model(
    name: Option<&str>,
    folder: Option<&str>,
    query_template: default!(Option<&str>, "NULL"),
    passage_template: default!(Option<&str>, "NULL"),
    pooling: default!(Option<&str>, "NULL"),
    max_tokens: default!(Option<i32>, "NULL"),
    padding_side: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(dimension, i32),
        name!(pooling, String),
        name!(max_tokens, i32),
        name!(padding_side, String),
        name!(query_template, String),
        name!(passage_template, String),
        name!(fingerprint, String),
    ),
> {
    require_superuser("register models");
    let (Some(name), Some(folder)) = (name, folder) else {
        raise(
            EngineError::invalid("model name and folder must not be NULL")
                .with_hint("inf_register_model('name', '/absolute/path/to/folder')"),
        );
    };
    let options = RegisterOptions {
        query_template,
        passage_template,
        pooling,
        max_tokens,
        padding_side,
    };
    let row = build_row(name, folder, &options).or_raise();
    // Loading proves the files work together (and warms this session's cache);
    // build_row has just computed the fingerprint from the same files.
    inference::prove_loadable(&row);
    store_row(&row);
    let s = &row.spec;
    TableIterator::once((
        s.name.clone(),
        s.dimension as i32,
        s.pooling.name().to_string(),
        s.max_tokens as i32,
        s.padding_side.name().to_string(),
        s.query_template.clone(),
        s.passage_template.clone(),
        row.fingerprint.clone(),
    ))
}

/// What the caller of inf_register_model overrides; NULL keeps the folder's.
#[derive(Default)]
struct RegisterOptions<'a> {
    query_template: Option<&'a str>,
    passage_template: Option<&'a str>,
    pooling: Option<&'a str>,
    max_tokens: Option<i32>,
    padding_side: Option<&'a str>,
}

fn build_row(name: &str, folder: &str, options: &RegisterOptions<'_>) -> Result<ModelRow, EngineError> {
    let name_ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(EngineError::invalid(format!("model name {name:?} is not allowed"))
            .with_hint("use 1 to 63 letters, digits, '_', '.' or '-'"));
    }
    let defaults = model_folder::inspect(Path::new(folder))?;
    let pooling = defaults.pooling_or(options.pooling.map(Pooling::parse).transpose()?)?;
    let padding_side = match options.padding_side {
        Some(side) => PaddingSide::parse(side)?,
        None => defaults.padding_side,
    };
    let FolderDefaults {
        folder,
        onnx_file,
        tokenizer_file,
        dimension,
        max_tokens: default_max,
        pad_token_id,
        query_template: default_query,
        passage_template: default_passage,
        ..
    } = defaults;
    let query_template = options.query_template.map(str::to_string).unwrap_or(default_query);
    let passage_template = options.passage_template.map(str::to_string).unwrap_or(default_passage);
    Template::query(&query_template)?;
    Template::passage(&passage_template)?;
    let max_tokens = match options.max_tokens {
        Some(n) if n < 3 => return Err(EngineError::invalid(format!("max_tokens must be at least 3, not {n}"))),
        Some(n) => n as usize,
        None => default_max,
    };
    let fingerprint = model_fingerprint(&folder, &onnx_file, &tokenizer_file)?;
    Ok(ModelRow {
        spec: ModelSpec {
            name: name.to_string(),
            onnx_file,
            tokenizer_file,
            query_template,
            passage_template,
            pooling,
            dimension,
            max_tokens,
            pad_token_id,
            padding_side,
        },
        folder,
        fingerprint,
    })
}

fn store_row(row: &ModelRow) {
    let s = &row.spec;
    Spi::run_with_args(
        "INSERT INTO inf_ir.models AS m (name, folder, onnx_file, tokenizer_file, query_template,
             passage_template, pooling, dimension, max_tokens, pad_token_id, padding_side, fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (name) DO UPDATE SET folder = EXCLUDED.folder, onnx_file = EXCLUDED.onnx_file,
             tokenizer_file = EXCLUDED.tokenizer_file, query_template = EXCLUDED.query_template,
             passage_template = EXCLUDED.passage_template, pooling = EXCLUDED.pooling,
             dimension = EXCLUDED.dimension, max_tokens = EXCLUDED.max_tokens,
             pad_token_id = EXCLUDED.pad_token_id, padding_side = EXCLUDED.padding_side, fingerprint = EXCLUDED.fingerprint,
             registered_at = now()",
        &[
            s.name.as_str().into(),
            row.folder.to_string_lossy().as_ref().into(),
            s.onnx_file.to_string_lossy().as_ref().into(),
            s.tokenizer_file.to_string_lossy().as_ref().into(),
            s.query_template.as_str().into(),
            s.passage_template.as_str().into(),
            s.pooling.name().into(),
            (s.dimension as i32).into(),
            (s.max_tokens as i32).into(),
            (s.pad_token_id as i32).into(),
            s.padding_side.name().into(),
            row.fingerprint.as_str().into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot store model {}: {e}", s.name));
}

/// Remove a model from the registry. Superusers only. Returns whether it existed.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_unregister_model(name: &str) -> bool {
    // STRICT: a NULL name returns NULL.
    require_superuser("unregister models");
    Spi::get_one_with_args::<bool>(
        "WITH d AS (DELETE FROM inf_ir.models WHERE name = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Register every `name=folder` of `inf_ir.server_models`. CREATE EXTENSION
/// calls it, so each new database embeds at once. A model that fails to
/// register is reported as a WARNING and does not block the extension.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_register_server_models() -> i32 {
    require_superuser("register models");
    let mut registered = 0;
    for (name, folder) in gucs::server_models() {
        match build_row(&name, &folder, &RegisterOptions::default()) {
            Ok(row) => {
                store_row(&row);
                registered += 1;
            }
            Err(e) => warn(EngineError {
                message: format!("model {name} not registered: {}", e.message),
                ..e
            }),
        }
    }
    registered
}

pgrx::extension_sql!(
    "SELECT inf_register_server_models();",
    name = "register_server_models",
    requires = [inf_register_server_models, "models_table"],
    finalize
);
