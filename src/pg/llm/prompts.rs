//! A stage's prompt (inf_ir.llm_prompts): the newest or a given version,
//! its slots filled, the request it makes for an endpoint; and the check
//! that a reply schema is one inf_ir can enforce, run when a prompt is
//! stored.

use super::endpoints::EndpointRow;
use crate::engine::llm::chat::ChatRequest;
use crate::engine::llm::runner::Job;
use crate::engine::llm::{prompt, stages};
use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;
use std::collections::HashMap;

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
                "stages: instruction, negatives, judge, rerank, rerank_graded, rerank_listwise; see SELECT stage, version FROM inf_ir.llm_prompts",
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

    /// Tokens a request reserves under a tokens-per-minute limit: about four
    /// characters a token, plus all the output allowed.
    pub fn estimated_tokens(&self, user: &str, max_output_tokens: u32) -> f64 {
        ((self.system.len() + user.len()) / 4) as f64 + max_output_tokens as f64
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
            estimated_tokens: self.estimated_tokens(user, row.max_output_tokens),
            body,
        }
    }
}

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
