//! `inf_llm_chat` / `inf_llm_batch`: one stage's prompt sent to an
//! endpoint per set of slot values, through the engine's runner
//! (concurrency, retries, rate limits, cancel), replies checked against the
//! prompt's schema.

use super::endpoints::EndpointRow;
use super::prompts::Prompt;
use crate::engine::llm::chat::parse_reply;
use crate::engine::llm::runner::{self, Job, Outcome};
use crate::pg::errors::raise_with;
use crate::pg::interrupt::PgInterrupt;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;
use std::collections::HashMap;

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
    .unwrap_or_else(|e| crate::pg::errors::raise(e));
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
