//! OpenAI-compatible chat completions: the request body and what is taken
//! from the reply. The same JSON works for OpenAI, vLLM, llama.cpp's server
//! and llama-cpp-python; the reply format is asked for with `response_format`
//! (a JSON Schema), and the reply's content is parsed and checked against
//! that schema before anyone sees it.

use super::schema;
use serde_json::{json, Value};

/// How the reply's schema is asked for: OpenAI and vLLM take
/// `{"type": "json_schema", "json_schema": {...}}`, llama-cpp-python's
/// server `{"type": "json_object", "schema": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFormat {
    JsonSchema,
    JsonObject,
}

impl ReplyFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "json_schema" => Some(ReplyFormat::JsonSchema),
            "json_object" => Some(ReplyFormat::JsonObject),
            _ => None,
        }
    }
}

/// What a request asks of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub system: &'a str,
    pub user: &'a str,
    pub temperature: f64,
    pub max_tokens: u32,
    /// Name and JSON Schema of the reply.
    pub reply_name: &'a str,
    pub reply_schema: &'a Value,
    pub reply_format: ReplyFormat,
}

impl ChatRequest<'_> {
    pub fn body(&self) -> Value {
        let messages = messages(self.system, self.user);
        let response_format = match self.reply_format {
            ReplyFormat::JsonSchema => json!({
                "type": "json_schema",
                "json_schema": {"name": self.reply_name, "schema": self.reply_schema, "strict": true}
            }),
            ReplyFormat::JsonObject => json!({"type": "json_object", "schema": self.reply_schema}),
        };
        json!({
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": response_format
        })
    }
}

/// A chat's messages: the system prompt (when there is one), then the user's.
pub fn messages(system: &str, user: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    if !system.trim().is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": user}));
    messages
}

/// A completion's (prompt, completion) token counts, clamped: they come
/// from the network and end up in bigint columns and sums.
pub fn usage_of(envelope: &Value) -> (u64, u64) {
    let count = |key: &str| {
        envelope
            .get("usage")
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(u32::MAX as u64)
    };
    (count("prompt_tokens"), count("completion_tokens"))
}

/// A checked reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// The reply's JSON object, valid against the request's schema.
    pub value: Value,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Why a reply could not be used; `text` is what the model said (for the
/// failure record), empty when there was no message at all.
#[derive(Debug, Clone, PartialEq)]
pub struct BadReply {
    pub reason: String,
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Parse a chat completion's HTTP body and check its message against `reply_schema`.
pub fn parse_reply(body: &str, reply_schema: &Value) -> Result<ChatReply, BadReply> {
    let bad = |reason: String, text: &str, usage: (u64, u64)| BadReply {
        reason,
        text: text.to_string(),
        prompt_tokens: usage.0,
        completion_tokens: usage.1,
    };
    let envelope: Value = serde_json::from_str(body)
        .map_err(|e| bad(format!("the response is not JSON ({e})"), truncate(body, 2000), (0, 0)))?;
    let usage = usage_of(&envelope);
    let choice = envelope.get("choices").and_then(|c| c.get(0));
    let Some(text) = choice
        .and_then(|c| c.pointer("/message/content"))
        .and_then(Value::as_str)
    else {
        return Err(bad("the response has no choices[0].message.content".into(), "", usage));
    };
    let finish = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str);
    let json = strip_fence(text);
    // llama.cpp's JSON grammar lets raw line breaks into strings; read them
    // as the escapes they stand for rather than retry a usable reply.
    let parsed = serde_json::from_str(json).or_else(|e| match escape_controls_in_strings(json) {
        Some(fixed) => serde_json::from_str(&fixed).map_err(|_| e),
        None => Err(e),
    });
    let value: Value = match parsed {
        Ok(v) => v,
        Err(e) => {
            let cut = if finish == Some("length") {
                " (the reply hit max_tokens)"
            } else {
                ""
            };
            return Err(bad(format!("the reply is not JSON{cut}: {e}"), text, usage));
        }
    };
    schema::validate(reply_schema, &value)
        .map_err(|e| bad(format!("the reply breaks its schema: {e}"), text, usage))?;
    Ok(ChatReply {
        value,
        prompt_tokens: usage.0,
        completion_tokens: usage.1,
    })
}

/// `json` with control characters inside strings escaped; None when it has none.
fn escape_controls_in_strings(json: &str) -> Option<String> {
    let mut out = String::with_capacity(json.len() + 16);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    for c in json.chars() {
        if in_string && !escaped && (c as u32) < 0x20 {
            changed = true;
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                other => out.push_str(&format!("\\u{:04x}", other as u32)),
            }
            continue;
        }
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
    }
    changed.then_some(out)
}

/// Models that ignore `response_format` often wrap JSON in a Markdown fence.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else { return t };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// The first `max_chars` characters of `s`.
pub fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"instruction": {"type": "string", "minLength": 1}},
               "required": ["instruction"], "additionalProperties": false})
    }

    fn completion(content: &str, finish: &str) -> String {
        json!({"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
               "usage": {"prompt_tokens": 50, "completion_tokens": 12}})
        .to_string()
    }

    #[test]
    fn body_asks_for_the_schema() {
        let s = schema();
        let request = ChatRequest {
            model: "m",
            system: "be brief",
            user: "hello",
            temperature: 0.2,
            max_tokens: 64,
            reply_name: "instruction",
            reply_schema: &s,
            reply_format: ReplyFormat::JsonSchema,
        };
        let body = request.body();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hello");
        assert_eq!(body["response_format"]["json_schema"]["schema"], s);
        assert_eq!(body["max_tokens"], 64);
        let no_system = ChatRequest {
            system: " ",
            ..request.clone()
        };
        assert_eq!(no_system.body()["messages"].as_array().unwrap().len(), 1);
        let llama = ChatRequest {
            reply_format: ReplyFormat::JsonObject,
            ..request
        };
        assert_eq!(
            llama.body()["response_format"],
            json!({"type": "json_object", "schema": s})
        );
        assert_eq!(ReplyFormat::parse("json_object"), Some(ReplyFormat::JsonObject));
        assert_eq!(ReplyFormat::parse("xml"), None);
    }

    #[test]
    fn raw_line_breaks_inside_strings_are_read_as_escapes() {
        let raw = "{\"instruction\": \"line one\nline two\\\" \tend\"}";
        let reply = parse_reply(&completion(raw, "stop"), &schema()).unwrap();
        assert_eq!(reply.value["instruction"], "line one\nline two\" \tend");
        // Outside strings they are plain white space; nothing to escape.
        assert_eq!(escape_controls_in_strings("{\n\"a\": 1}"), None);
        assert_eq!(
            escape_controls_in_strings("[\"\u{1}\"]").as_deref(),
            Some("[\"\\u0001\"]")
        );
    }

    #[test]
    fn a_good_reply_with_usage() {
        let reply = parse_reply(
            &completion(r#"{"instruction": "peer-reviewed only"}"#, "stop"),
            &schema(),
        )
        .unwrap();
        assert_eq!(reply.value["instruction"], "peer-reviewed only");
        assert_eq!((reply.prompt_tokens, reply.completion_tokens), (50, 12));
        let fenced = parse_reply(&completion("```json\n{\"instruction\": \"x\"}\n```", "stop"), &schema());
        assert!(fenced.is_ok());
    }

    #[test]
    fn bad_replies_keep_their_text_and_reason() {
        let e = parse_reply("<html>502</html>", &schema()).unwrap_err();
        assert!(e.reason.starts_with("the response is not JSON"), "{}", e.reason);
        let e = parse_reply(r#"{"choices": []}"#, &schema()).unwrap_err();
        assert_eq!(e.reason, "the response has no choices[0].message.content");
        let e = parse_reply(&completion("{\"instruction\": \"unfinished", "length"), &schema()).unwrap_err();
        assert!(e.reason.contains("hit max_tokens"), "{}", e.reason);
        assert_eq!(e.text, "{\"instruction\": \"unfinished");
        assert_eq!(e.prompt_tokens, 50);
        let e = parse_reply(&completion(r#"{"instruction": ""}"#, "stop"), &schema()).unwrap_err();
        assert!(e.reason.contains("$.instruction: 0 characters"), "{}", e.reason);
    }
}
