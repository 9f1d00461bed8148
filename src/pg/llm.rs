//! LLM endpoints and prompts from SQL: the tables (sql/llm.sql), reading an
//! endpoint with its key, and `inf_llm_chat` / `inf_llm_batch`: checked
//! requests through the engine's runner (concurrency, retries, limits,
//! cancel).

use super::errors::raise_with;
use super::interrupt::PgInterrupt;
use crate::engine::llm::chat::{parse_reply, ChatRequest, ReplyFormat};
use crate::engine::llm::retry::RetryPolicy;
use crate::engine::llm::runner::{self, Job, Outcome, Settings};
use crate::engine::llm::secret::{self, Secret};
use crate::engine::llm::{prompt, stages, transport};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pgrx::extension_sql_file!("../../sql/llm.sql", name = "llm_tables", requires = ["dataset_tables"]);

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

/// A stage's prompt: the given version, or the newest.
pub struct Prompt {
    pub version: i32,
    pub system: String,
    pub template: String,
    pub reply_schema: Value,
    /// Slot values are cut to this many characters.
    pub max_slot_chars: usize,
}

impl Prompt {
    pub fn load(stage: &str, version: Option<i32>) -> Self {
        let found = Spi::connect(|client| {
            let rows = client.select(
                "SELECT version, system, template, reply_schema, max_slot_chars FROM inf_ir.llm_prompts
                 WHERE stage = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
                Some(1),
                &[stage.into(), version.into()],
            )?;
            let Some(r) = rows.into_iter().next() else {
                return Ok::<_, pgrx::spi::Error>(None);
            };
            Ok(Some(Prompt {
                version: r.get::<i32>(1)?.unwrap_or(1),
                system: r.get::<String>(2)?.unwrap_or_default(),
                template: r.get::<String>(3)?.unwrap_or_default(),
                reply_schema: r.get::<JsonB>(4)?.map(|j| j.0).unwrap_or(Value::Null),
                max_slot_chars: r.get::<i32>(5)?.unwrap_or(4000).max(1) as usize,
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.llm_prompts: {e}"));
        found.unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                match version {
                    Some(v) => format!("there is no prompt version {v} for stage \"{stage}\""),
                    None => format!("there is no prompt for stage \"{stage}\""),
                },
                "stages: instruction, negatives, judge; see SELECT stage, version FROM inf_ir.llm_prompts",
            )
        })
    }

    /// The user message with `slots` filled, each cut to `max_slot_chars`.
    pub fn render(&self, stage: &str, slots: &HashMap<&str, &str>) -> String {
        let clipped: Vec<(&str, std::borrow::Cow<str>)> = slots
            .iter()
            .map(|(name, value)| (*name, stages::clip(value, self.max_slot_chars)))
            .collect();
        let values: HashMap<&str, &str> = clipped.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        prompt::render(&self.template, &values).unwrap_or_else(|e| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("prompt \"{stage}\" version {}: {e}", self.version),
                format!(
                    "give a value for each slot: {}",
                    prompt::slots(&self.template).join(", ")
                ),
            )
        })
    }

    /// The request for one rendered user message to `row`'s endpoint.
    pub fn job(&self, row: &EndpointRow, stage: &str, key: usize, user: &str) -> Job {
        let body = ChatRequest {
            model: &row.model,
            system: &self.system,
            user,
            temperature: row.temperature,
            max_tokens: row.max_output_tokens,
            reply_name: stage,
            reply_schema: &self.reply_schema,
            reply_format: row.reply_format,
        }
        .body()
        .to_string();
        Job {
            key,
            // About four characters a token, plus all the output allowed.
            estimated_tokens: ((self.system.len() + user.len()) / 4) as f64 + row.max_output_tokens as f64,
            body,
        }
    }
}

/// `value`, or an ERROR saying that `what` is NULL.
fn required<T>(value: Option<T>, what: &str) -> T {
    value.unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be NULL"),
            "inf_llm_chat(endpoint, stage, slots) / inf_llm_batch(endpoint, stage, slots[]): stages are instruction, negatives, judge",
        )
    })
}

/// `slots` as named strings, or an ERROR naming the bad one (`which`
/// says which element of a batch, when there are several).
fn slot_values<'a>(slots: &'a Value, which: &str) -> HashMap<&'a str, &'a str> {
    let Value::Object(fields) = slots else {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("slots{which} must be a JSON object of strings"),
            r#"for example '{"query": "...", "passage": "..."}'"#,
        )
    };
    fields
        .iter()
        .map(|(name, value)| match value.as_str() {
            Some(text) => (name.as_str(), text),
            None => raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("slot \"{name}\"{which} is not a string"),
                "give every slot a text value",
            ),
        })
        .collect()
}

/// Send one request per element of `slots` (all rendered and checked before
/// any is sent) through the runner; outcomes in the order of `slots`.
fn run_stage(endpoint: &str, stage: &str, slots: &[Value], prompt_version: Option<i32>) -> Vec<Outcome> {
    let row = EndpointRow::load(endpoint);
    let prompt = Prompt::load(stage, prompt_version);
    let many = slots.len() > 1;
    let jobs: Vec<Job> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let which = if many {
                format!(" (element {})", i + 1)
            } else {
                String::new()
            };
            let user = prompt.render(stage, &slot_values(s, &which));
            prompt.job(&row, stage, i, &user)
        })
        .collect();
    let schema = prompt.reply_schema.clone();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
    runner::run(
        row.transport(),
        jobs,
        row.settings(),
        Box::new(move |_, text| parse_reply(text, &schema)),
        &PgInterrupt,
        |key, outcome| {
            outcomes[key] = Some(outcome);
            Ok(())
        },
    )
    .unwrap_or_else(|e| super::errors::raise(e));
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| pgrx::error!("inf_ir: a request ended without an outcome")))
        .collect()
}

/// Send one request of `stage`'s prompt with `slots` to `endpoint` and
/// return the reply, checked against the prompt's schema. Retries 429, 5xx,
/// timeouts and unusable replies; an ERROR says why the last attempt failed.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_chat(
    endpoint: Option<&str>,
    stage: Option<&str>,
    slots: Option<JsonB>,
    prompt_version: default!(Option<i32>, "NULL"),
) -> JsonB {
    let (endpoint, stage) = (required(endpoint, "endpoint"), required(stage, "stage"));
    let slots = required(slots, "slots").0;
    match run_stage(endpoint, stage, &[slots], prompt_version).pop() {
        Some(Outcome::Done { reply, .. }) => JsonB(reply.value),
        Some(Outcome::Failed { reason, attempts, .. }) => raise_with(
            PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
            format!("LLM endpoint \"{endpoint}\" gave no usable reply after {attempts} attempt(s): {reason}"),
            "check the endpoint (base_url, model, key) and the prompt's reply_schema",
        ),
        None => pgrx::error!("inf_ir: the request ended without an outcome"),
    }
}

/// One request per element of `slots`, up to the endpoint's
/// `max_concurrency` at once and within its rate limits; a row per element
/// (`ord` from 1): the checked reply, or why it failed and what the model
/// said. A failed element does not fail the call; a cancel does.
#[allow(clippy::type_complexity)] // pgrx needs the literal row type
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_batch(
    endpoint: Option<&str>,
    stage: Option<&str>,
    slots: Option<Vec<Option<JsonB>>>,
    prompt_version: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ord, i32),
        name!(reply, Option<JsonB>),
        name!(failure, Option<String>),
        name!(reply_text, Option<String>),
        name!(attempts, i32),
        name!(prompt_tokens, i64),
        name!(completion_tokens, i64),
    ),
> {
    let (endpoint, stage) = (required(endpoint, "endpoint"), required(stage, "stage"));
    let slots: Vec<Value> = required(slots, "slots")
        .into_iter()
        .enumerate()
        .map(|(i, s)| required(s, &format!("slots element {}", i + 1)).0)
        .collect();
    let rows: Vec<_> = run_stage(endpoint, stage, &slots, prompt_version)
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| match outcome {
            Outcome::Done { reply, attempts } => (
                i as i32 + 1,
                Some(JsonB(reply.value)),
                None,
                None,
                attempts as i32,
                reply.prompt_tokens as i64,
                reply.completion_tokens as i64,
            ),
            Outcome::Failed {
                reason,
                text,
                attempts,
                prompt_tokens,
                completion_tokens,
                ..
            } => (
                i as i32 + 1,
                None,
                Some(reason),
                (!text.is_empty()).then_some(text),
                attempts as i32,
                prompt_tokens as i64,
                completion_tokens as i64,
            ),
        })
        .collect();
    TableIterator::new(rows)
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_chat(text, text, jsonb, integer) FROM PUBLIC;
     REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_batch(text, text, jsonb[], integer) FROM PUBLIC;",
    name = "llm_chat_privileges",
    requires = [inf_llm_chat, inf_llm_batch]
);

/// Why `schema` cannot be a prompt's reply schema, or NULL when it can:
/// every keyword in it is one inf_ir checks replies against, with a value
/// of the right shape (see `engine::llm::schema::check_schema`).
#[pg_extern(immutable, strict, parallel_safe)]
fn inf_reply_schema_problem(schema: JsonB) -> Option<String> {
    crate::engine::llm::schema::check_schema(&schema.0).err()
}

pgrx::extension_sql!(
    r#"
-- Reply schemas are checked when a prompt is stored, not when a reply
-- fails to be checked against them.
CREATE FUNCTION inf_ir.llm_prompts_check_schema() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    problem text := @extschema@.inf_reply_schema_problem(NEW.reply_schema);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'reply_schema of prompt "%" version %: %', NEW.stage, NEW.version, problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'replies are checked against type, properties, required (an array of names), additionalProperties (true or false), items, enum, minLength, maxLength, minimum, maximum, minItems and maxItems';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER llm_prompts_check_schema BEFORE INSERT OR UPDATE OF reply_schema ON inf_ir.llm_prompts
    FOR EACH ROW EXECUTE FUNCTION inf_ir.llm_prompts_check_schema();
-- The prompts that come with the extension pass the same check.
DO $$ BEGIN
    PERFORM 1 FROM inf_ir.llm_prompts p WHERE @extschema@.inf_reply_schema_problem(p.reply_schema) IS NOT NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'a default prompt''s reply_schema is not checkable';
    END IF;
END $$;
"#,
    name = "llm_prompts_schema_check",
    requires = ["llm_tables", inf_reply_schema_problem]
);
