//! How candidates are judged: the `mode` argument of inf_rerank_llm and
//! inf_search's `rerank_mode`.

use crate::pg::errors::raise_with;
use pgrx::PgSqlErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One request per candidate; relevance from a Yes/No answer's logprobs.
    Logprobs,
    /// One request per candidate; relevance from a JSON grade 0-3.
    Graded,
    /// Sliding windows of numbered candidates; the model answers their order.
    Listwise,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Logprobs => "logprobs",
            Mode::Graded => "graded",
            Mode::Listwise => "listwise",
        }
    }

    /// Its prompt's stage in inf_ir.llm_prompts.
    pub fn stage(self) -> &'static str {
        match self {
            Mode::Logprobs => "rerank",
            Mode::Graded => "rerank_graded",
            Mode::Listwise => "rerank_listwise",
        }
    }

    /// The mode a caller asked for; None is auto (logprobs when the endpoint
    /// returns them, else graded).
    pub fn parse(text: Option<&str>) -> Option<Mode> {
        match text.unwrap_or("auto") {
            "auto" => None,
            "logprobs" => Some(Mode::Logprobs),
            "graded" => Some(Mode::Graded),
            "listwise" => Some(Mode::Listwise),
            other => raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown re-ranking mode \"{other}\""),
                "modes: auto (logprobs when the endpoint returns them, else graded), logprobs, graded, listwise",
            ),
        }
    }
}
