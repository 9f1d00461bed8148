//! Pointwise judgments: one request per candidate, asking whether the
//! passage satisfies the query together with the instruction.
//!
//! With `logprobs` (OpenAI, vLLM, llama.cpp's servers) the model answers one
//! token and its relevance is P(yes) / (P(yes) + P(no)) from the top
//! log-probabilities of that token, as FollowIR and monoT5 score: a graded
//! value from a single short request. Without them, the reply is a JSON
//! object `{"relevance": 0..3}` checked against its schema, and the grade
//! is scaled to [0, 1].

use crate::engine::llm::chat::{messages, truncate, usage_of, BadReply};
use serde_json::{json, Value};

/// The start of the reason a reply without logprobs is unusable (`auto`
/// mode then asks for graded replies instead).
pub const NO_LOGPROBS: &str = "the response has no logprobs";

/// Top log-probabilities asked for: enough that both answers appear.
pub const TOP_LOGPROBS: u32 = 10;

/// The request body of a yes/no judgment read from log-probabilities: one
/// output token, greedy.
pub fn logprob_request_body(model: &str, system: &str, user: &str) -> Value {
    json!({
        "model": model,
        "messages": messages(system, user),
        "temperature": 0.0,
        "max_tokens": 1,
        "logprobs": true,
        "top_logprobs": TOP_LOGPROBS
    })
}

/// A token as an answer: "yes", "no", or neither (case, spaces and
/// punctuation aside).
fn answer_of(token: &str) -> Option<bool> {
    let word: String = token
        .trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation() || c == '\u{2581}' || c == '\u{120}')
        .to_lowercase();
    match word.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// What a logprob judgment gave: relevance in [0, 1] and the token counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgment {
    pub relevance: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The relevance in a chat completion's body that carries `logprobs`.
/// When only one answer is among the top tokens, the other's probability
/// is taken at its upper bound (that of the least likely listed token, or
/// the mass the list leaves if less); when
/// neither is, the answer itself decides (1 or 0); any other answer is
/// unusable.
pub fn relevance_from_logprobs(body: &str) -> Result<Judgment, BadReply> {
    let bad = |reason: String, text: &str, usage: (u64, u64)| BadReply {
        reason,
        text: text.to_string(),
        prompt_tokens: usage.0,
        completion_tokens: usage.1,
    };
    let envelope: Value = serde_json::from_str(body)
        .map_err(|e| bad(format!("the response is not JSON ({e})"), truncate(body, 2000), (0, 0)))?;
    let usage = usage_of(&envelope);
    let choice = envelope.pointer("/choices/0");
    let answer = choice
        .and_then(|c| c.pointer("/message/content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let first = choice.and_then(|c| c.pointer("/logprobs/content/0"));
    let mut top: Vec<(String, f64)> = first
        .and_then(|t| t.get("top_logprobs"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| Some((e.get("token")?.as_str()?.to_string(), e.get("logprob")?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if top.is_empty() {
        // Some servers give only the chosen token's logprob.
        if let (Some(token), Some(lp)) = (
            first.and_then(|t| t.get("token")).and_then(Value::as_str),
            first.and_then(|t| t.get("logprob")).and_then(Value::as_f64),
        ) {
            top.push((token.to_string(), lp));
        }
    }
    let top: Vec<(String, f64)> = top.into_iter().filter(|(_, lp)| lp.is_finite() && *lp <= 0.0).collect();
    let mass = |want: bool| -> f64 {
        top.iter()
            .filter(|(t, _)| answer_of(t) == Some(want))
            .map(|(_, lp)| lp.exp())
            .sum()
    };
    let (yes, no) = (mass(true), mass(false));
    // An unlisted token is no likelier than the least likely listed one
    // (the list is the top), nor than the mass the list leaves.
    let listed: f64 = top.iter().map(|(_, lp)| lp.exp()).sum();
    let floor = top
        .iter()
        .map(|(_, lp)| lp.exp())
        .fold(f64::INFINITY, f64::min)
        .min((1.0 - listed).max(0.0));
    let relevance = match (yes > 0.0, no > 0.0) {
        (true, true) => yes / (yes + no),
        (true, false) => yes / (yes + floor.min(yes)),
        (false, true) => floor.min(no) / (floor.min(no) + no),
        (false, false) => match answer_of(answer) {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => {
                return Err(bad(
                    if first.is_none() {
                        format!("{NO_LOGPROBS} (the endpoint may not support them; use the graded mode)")
                    } else {
                        format!("the answer is neither yes nor no: {answer:?}")
                    },
                    answer,
                    usage,
                ))
            }
        },
    };
    Ok(Judgment {
        relevance,
        prompt_tokens: usage.0,
        completion_tokens: usage.1,
    })
}

/// The reply schema of the graded mode.
pub fn graded_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"relevance": {"type": "integer", "minimum": 0, "maximum": GRADES}},
        "required": ["relevance"],
        "additionalProperties": false
    })
}

/// The top grade: 0 not relevant, 1 on topic but not what the instruction
/// asks, 2 mostly, 3 fully.
pub const GRADES: u64 = 3;

/// The relevance in [0, 1] of a checked graded reply.
pub fn relevance_from_graded(reply: &Value) -> Result<f64, String> {
    match reply.get("relevance").and_then(Value::as_u64) {
        Some(g) if g <= GRADES => Ok(g as f64 / GRADES as f64),
        _ => Err(format!(
            "\"relevance\" is not a whole number from 0 to {GRADES}: {reply}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(content: &str, top: &[(&str, f64)]) -> String {
        let top: Vec<Value> = top.iter().map(|(t, lp)| json!({"token": t, "logprob": lp})).collect();
        json!({
            "choices": [{"message": {"content": content},
                         "logprobs": {"content": [{"token": content, "logprob": top.first().map_or(0.0, |t| t["logprob"].as_f64().unwrap()), "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 1}
        })
        .to_string()
    }

    #[test]
    fn relevance_is_the_yes_share_of_yes_and_no() {
        let j =
            relevance_from_logprobs(&completion("Yes", &[("Yes", (0.75f64).ln()), ("No", (0.25f64).ln())])).unwrap();
        assert!((j.relevance - 0.75).abs() < 1e-12);
        assert_eq!((j.prompt_tokens, j.completion_tokens), (120, 1));
        // Variants of one answer add up; other tokens do not count.
        let j = relevance_from_logprobs(&completion(
            "no",
            &[
                ("no", (0.5f64).ln()),
                (" No", (0.1f64).ln()),
                ("yes", (0.2f64).ln()),
                ("maybe", (0.2f64).ln()),
            ],
        ))
        .unwrap();
        assert!((j.relevance - 0.25).abs() < 1e-12, "{}", j.relevance);
    }

    #[test]
    fn a_missing_answer_is_bounded_by_the_least_likely_listed_token() {
        let j =
            relevance_from_logprobs(&completion("Yes", &[("Yes", (0.9f64).ln()), ("Sure", (0.01f64).ln())])).unwrap();
        assert!((j.relevance - 0.9 / 0.91).abs() < 1e-12);
        let j = relevance_from_logprobs(&completion("No", &[("No", (0.8f64).ln()), ("The", (0.05f64).ln())])).unwrap();
        assert!((j.relevance - 0.05 / 0.85).abs() < 1e-12);
    }

    #[test]
    fn without_either_answer_in_the_list_the_answer_decides_or_it_is_unusable() {
        let only_token = json!({"choices": [{"message": {"content": "yes"},
                                              "logprobs": {"content": [{"token": "yes", "logprob": -0.01}]}}]})
        .to_string();
        let alone = relevance_from_logprobs(&only_token).unwrap().relevance;
        // P(no) is at most the 1 - P(yes) the list leaves: relevance = P(yes).
        assert!((alone - (-0.01f64).exp()).abs() < 1e-9, "{alone}");
        let decided = json!({"choices": [{"message": {"content": "No."}, "logprobs": {"content": []}}]}).to_string();
        assert_eq!(relevance_from_logprobs(&decided).unwrap().relevance, 0.0);
        let e = relevance_from_logprobs(&completion("Perhaps", &[("Perhaps", -0.1)])).unwrap_err();
        assert!(e.reason.contains("neither yes nor no"), "{}", e.reason);
        let e = relevance_from_logprobs(r#"{"choices": [{"message": {"content": "maybe"}}]}"#).unwrap_err();
        assert!(e.reason.contains("no logprobs"), "{}", e.reason);
        assert!(relevance_from_logprobs("{").unwrap_err().reason.contains("not JSON"));
    }

    #[test]
    fn tokenizer_markers_and_punctuation_are_not_part_of_the_answer() {
        for t in ["Yes", " yes", "YES.", "\u{2581}Yes", "\u{120}yes"] {
            assert_eq!(answer_of(t), Some(true), "{t:?}");
        }
        assert_eq!(answer_of("No!"), Some(false));
        assert_eq!(answer_of("Nope"), None);
    }

    #[test]
    fn the_request_asks_for_one_token_and_its_alternatives() {
        let body = logprob_request_body("m", "sys", "user");
        assert_eq!(body["max_tokens"], 1);
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["top_logprobs"], TOP_LOGPROBS);
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
        assert!(
            logprob_request_body("m", " ", "u")["messages"]
                .as_array()
                .unwrap()
                .len()
                == 1
        );
    }

    #[test]
    fn graded_replies_scale_to_one() {
        assert_eq!(crate::engine::llm::schema::check_schema(&graded_schema()), Ok(()));
        assert_eq!(relevance_from_graded(&json!({"relevance": 3})), Ok(1.0));
        assert_eq!(relevance_from_graded(&json!({"relevance": 0})), Ok(0.0));
        assert!(relevance_from_graded(&json!({"relevance": 4})).is_err());
        assert!(relevance_from_graded(&json!({"score": 1})).is_err());
    }
}
