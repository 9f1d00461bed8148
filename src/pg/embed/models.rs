//! The model registry's rows (`inf_ir.models`, sql/models.sql): a model
//! name, or the default, turned into an engine `ModelSpec` with its folder
//! and fingerprint. Every embedding path reads models here.

use crate::engine::embed::padded_batch::PaddingSide;
use crate::engine::{EngineError, ModelSpec, Pooling};
use crate::pg::errors::{raise, raise_with};
use crate::pg::{gucs, spi_read};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::path::PathBuf;

/// A registry row, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub spec: ModelSpec,
    pub folder: PathBuf,
    pub fingerprint: String,
}

/// Look up `name` (or the default model) in the registry.
pub fn lookup(name: Option<&str>) -> ModelRow {
    let name = match name.map(str::to_string).or_else(gucs::default_model) {
        Some(n) => n,
        None => only_model(),
    };
    let query = "SELECT onnx_file, tokenizer_file, query_template, passage_template, pooling, dimension,
                        max_tokens, pad_token_id, folder, fingerprint, padding_side
                 FROM inf_ir.models WHERE name = $1";
    let row = spi_read::select_planned(query, &[name.as_str().into()], |table| {
        if table.is_empty() {
            return Ok(None);
        }
        let t = table.first();
        let text = |i: usize| -> Result<String, pgrx::spi::SpiError> { Ok(t.get::<String>(i)?.unwrap_or_default()) };
        let int = |i: usize| -> Result<i32, pgrx::spi::SpiError> { Ok(t.get::<i32>(i)?.unwrap_or_default()) };
        Ok::<_, pgrx::spi::SpiError>(Some(ModelRow {
            spec: ModelSpec {
                name: name.clone(),
                onnx_file: PathBuf::from(text(1)?),
                tokenizer_file: PathBuf::from(text(2)?),
                query_template: text(3)?,
                passage_template: text(4)?,
                pooling: Pooling::parse(&text(5)?).unwrap_or(Pooling::Mean),
                dimension: int(6)? as usize,
                max_tokens: int(7)? as usize,
                pad_token_id: int(8)? as u32,
                padding_side: PaddingSide::parse(&text(11)?).unwrap_or_default(),
            },
            folder: PathBuf::from(text(9)?),
            fingerprint: text(10)?,
        }))
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read inf_ir.models: {e}"));
    row.unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("model \"{name}\" is not registered"),
            format!(
                "registered models: {}; a superuser adds one with inf_register_model(name, folder)",
                model_names()
            ),
        )
    })
}

fn model_names() -> String {
    let names = spi_read::one::<String>("SELECT string_agg(name, ', ' ORDER BY name) FROM inf_ir.models", &[])
        .ok()
        .flatten();
    names.unwrap_or_else(|| "none".to_string())
}

fn only_model() -> String {
    let names: Vec<String> = Spi::connect(|client| {
        client
            .select("SELECT name FROM inf_ir.models ORDER BY name LIMIT 2", None, &[])
            .map(|t| t.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
    })
    .unwrap_or_default();
    match names.as_slice() {
        [one] => one.clone(),
        _ => raise(
            EngineError::invalid(format!(
                "no model given and inf_ir.default_model is not set ({} models registered)",
                if names.is_empty() { "no" } else { "several" }
            ))
            .with_hint("pass model => 'name', or SET inf_ir.default_model = 'name'"),
        ),
    }
}
