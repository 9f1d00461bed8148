//! LLM endpoints: the tables of sql/llm.sql (endpoints, prompts, runs,
//! batches, the ledger), and an endpoint's row read with its key (from the
//! server's environment or a private file, never from a table).

use crate::engine::llm::chat::ReplyFormat;
use crate::engine::llm::retry::RetryPolicy;
use crate::engine::llm::runner::Settings;
use crate::engine::llm::secret::{self, Secret};
use crate::engine::llm::transport;
use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::Duration;

pgrx::extension_sql_file!(
    "../../../sql/llm.sql",
    name = "llm_tables",
    requires = ["dataset_tables"]
);

/// An endpoint row, without its key.
pub struct EndpointRow {
    pub name: String,
    pub base_url: String,
    pub model: String,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
    pub reply_format: ReplyFormat,
    pub max_concurrency: usize,
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    pub timeout: Duration,
    pub max_output_tokens: u32,
    pub temperature: f64,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Dollars per million prompt / completion tokens, when known.
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
}

impl EndpointRow {
    pub fn load(name: &str) -> Self {
        let row = Spi::connect(|client| {
            let rows = client.select(
                "SELECT base_url, model, api_key_env, api_key_file, reply_format, max_concurrency,
                        requests_per_minute, tokens_per_minute, timeout_ms, max_output_tokens, temperature,
                        input_price_per_million::float8, output_price_per_million::float8, max_attempts
                 FROM inf_ir.llm_endpoints WHERE name = $1",
                Some(1),
                &[name.into()],
            )?;
            let Some(r) = rows.into_iter().next() else {
                return Ok::<_, pgrx::spi::Error>(None);
            };
            Ok(Some(EndpointRow {
                name: name.to_string(),
                base_url: r.get::<String>(1)?.unwrap_or_default(),
                model: r.get::<String>(2)?.unwrap_or_default(),
                api_key_env: r.get::<String>(3)?,
                api_key_file: r.get::<String>(4)?,
                reply_format: ReplyFormat::parse(&r.get::<String>(5)?.unwrap_or_default())
                    .unwrap_or(ReplyFormat::JsonSchema),
                max_concurrency: r.get::<i32>(6)?.unwrap_or(1).max(1) as usize,
                requests_per_minute: r.get::<i32>(7)?.map(f64::from),
                tokens_per_minute: r.get::<i32>(8)?.map(f64::from),
                timeout: Duration::from_millis(r.get::<i32>(9)?.unwrap_or(60000).max(1) as u64),
                max_output_tokens: r.get::<i32>(10)?.unwrap_or(512).max(1) as u32,
                temperature: r.get::<f32>(11)?.unwrap_or(0.7) as f64,
                input_price: r.get::<f64>(12)?,
                output_price: r.get::<f64>(13)?,
                max_attempts: r.get::<i32>(14)?.unwrap_or(5).max(1) as u32,
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.llm_endpoints: {e}"));
        row.unwrap_or_else(|| {
            let names = Spi::get_one::<String>("SELECT string_agg(name, ', ' ORDER BY name) FROM inf_ir.llm_endpoints")
                .ok()
                .flatten()
                .unwrap_or_else(|| "none yet".into());
            raise_with(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("LLM endpoint \"{name}\" does not exist"),
                format!("endpoints: {names}; a superuser adds one with inf_set_endpoint(name, base_url, model, ...)"),
            )
        })
    }

    /// The endpoint's key, read now from where the row says (never stored).
    pub fn api_key(&self) -> Option<Secret> {
        let found = if let Some(var) = &self.api_key_env {
            secret::from_env(var, |n| std::env::var(n).ok())
        } else if let Some(path) = &self.api_key_file {
            secret::from_file(path)
        } else {
            return None;
        };
        Some(found.unwrap_or_else(|e| {
            raise_with(
                PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
                format!("LLM endpoint \"{}\": {e}", self.name),
                "set the variable in the server's environment and restart it, or point api_key_file at a file of mode 600 owned by the server's OS user",
            )
        }))
    }

    pub fn transport(&self) -> transport::Endpoint {
        transport::Endpoint {
            url: transport::completions_url(&self.base_url),
            api_key: self.api_key(),
            timeout: self.timeout,
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            concurrency: self.max_concurrency,
            policy: RetryPolicy {
                max_attempts: self.max_attempts,
                ..RetryPolicy::default()
            },
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
        }
    }
}
