//! The OpenAI Batch API, for endpoints that offer it (OpenAI, Azure OpenAI
//! and servers with the same routes): a JSONL file of chat requests is
//! uploaded (`POST /files`), a batch made from it (`POST /batches`), polled
//! (`GET /batches/{id}`), and its output and error files read back
//! (`GET /files/{id}/content`). Half the price of direct requests and no
//! per-minute limits, with results within a completion window.
//!
//! Each call is retried on transient failures like a chat request; the
//! waits are sliced so that a cancel is seen within `POLL`.

use super::retry::{Failure, RetryPolicy};
use super::secret::Secret;
use super::transport::{self, Request};
use crate::engine::ivf::kmeans::SplitMix;
use crate::engine::{EngineError, EngineResult, ErrorKind, Interrupt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The route every request line and the batch name.
pub const CHAT_ROUTE: &str = "/v1/chat/completions";
/// The most an output file may be.
const FILE_LIMIT: u64 = 2 << 30;
const POLL: Duration = Duration::from_millis(50);

/// One line of a batch input file.
pub fn request_line(custom_id: &str, body: &Value) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": CHAT_ROUTE, "body": body}).to_string()
}

/// One line of a batch output or error file: its custom_id, and the chat
/// completion's body as text (for `chat::parse_reply`) or why it failed.
pub fn result_line(line: &str) -> Result<(String, Result<String, String>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("a result line is not JSON ({e})"))?;
    let id = v
        .get("custom_id")
        .and_then(Value::as_str)
        .ok_or("a result line has no custom_id")?
        .to_string();
    let response = v.get("response").filter(|r| !r.is_null());
    let status = response.and_then(|r| r.get("status_code")).and_then(Value::as_u64);
    let body = response.and_then(|r| r.get("body"));
    let error = v.get("error").filter(|e| !e.is_null());
    let outcome = match (status, body, error) {
        (Some(200..=299), Some(body), None) => Ok(body.to_string()),
        (status, body, error) => {
            let message = error
                .and_then(|e| e.get("message"))
                .or_else(|| body.and_then(|b| b.pointer("/error/message")))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            Err(match status {
                Some(code) => format!("HTTP {code} in the batch: {message}"),
                None => format!("failed in the batch: {message}"),
            })
        }
    };
    Ok((id, outcome))
}

/// A batch as the endpoint reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatus {
    pub id: String,
    /// validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub metadata: Value,
    /// The batch's own errors (a file it refused), joined.
    pub errors: Option<String>,
}

impl BatchStatus {
    /// Whether the endpoint is done with it (what it has is final).
    pub fn is_over(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "expired" | "cancelled")
    }

    fn parse(v: &Value) -> Option<Self> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let errors = v.pointer("/errors/data").and_then(Value::as_array).map(|list| {
            list.iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("; ")
        });
        Some(BatchStatus {
            id: text("id")?,
            status: text("status")?,
            output_file_id: text("output_file_id"),
            error_file_id: text("error_file_id"),
            metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
            errors: errors.filter(|e| !e.is_empty()),
        })
    }
}

/// A multipart/form-data body with a `purpose` field and one file.
pub fn multipart(boundary: &str, purpose: &str, file_name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// What became of a request to make a batch.
#[derive(Debug)]
pub enum Created {
    Made(BatchStatus),
    /// The endpoint refused it: there is no batch.
    NotMade(EngineError),
    /// No answer (a timeout, a dropped connection): there may be one.
    Unknown(EngineError),
}

/// What the endpoint's list of batches says about one tag.
#[derive(Debug)]
pub enum Listing {
    Found(BatchStatus),
    NotThere,
    /// The endpoint answered that it has no `GET /batches` (404, 405, 501).
    NoBatchApi(EngineError),
}

/// An endpoint's Batch API.
pub struct BatchApi {
    /// The base URL (`.../v1`).
    base: String,
    api_key: Option<Secret>,
    agent: ureq::Agent,
    policy: RetryPolicy,
}

impl BatchApi {
    pub fn new(base_url: &str, api_key: Option<Secret>, timeout: Duration, policy: RetryPolicy) -> Self {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/chat/completions").unwrap_or(base).to_string();
        BatchApi {
            base,
            api_key,
            agent: transport::agent(timeout),
            policy,
        }
    }

    /// Upload a batch input file; its file id.
    pub fn upload(&self, jsonl: &str, interrupt: &dyn Interrupt) -> EngineResult<String> {
        let boundary = format!("inf-ir-{:016x}", SplitMix(jsonl.len() as u64 ^ 0x9e37).next());
        let body = multipart(&boundary, "batch", "inf_ir_batch.jsonl", jsonl.as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let url = format!("{}/files", self.base);
        let reply = self.call(&url, Some((&content_type, &body)), interrupt)?;
        serde_json::from_str::<Value>(&reply)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| self.unusable(&url, &reply))
    }

    /// Make a batch of an uploaded file, tagged with `metadata`.
    pub fn create(&self, file_id: &str, metadata: &Value, interrupt: &dyn Interrupt) -> Created {
        let url = format!("{}/batches", self.base);
        let body = json!({"input_file_id": file_id, "endpoint": CHAT_ROUTE, "completion_window": "24h",
                          "metadata": metadata})
        .to_string();
        match self.call_classified(&url, Some(("application/json", body.as_bytes())), interrupt) {
            Ok(reply) => match self.status_of(&url, &reply) {
                Ok(status) => Created::Made(status),
                Err(e) => Created::Unknown(e),
            },
            // An HTTP error status is an answer: no batch was made.
            Err((Some(Failure::Status(_)), e)) => Created::NotMade(e),
            Err((_, e)) => Created::Unknown(e),
        }
    }

    pub fn get(&self, batch_id: &str, interrupt: &dyn Interrupt) -> EngineResult<BatchStatus> {
        let url = format!("{}/batches/{batch_id}", self.base);
        let reply = self.call(&url, None, interrupt)?;
        self.status_of(&url, &reply)
    }

    /// The newest batch whose metadata has `key` = `value`, among the last 100.
    pub fn find(&self, key: &str, value: &str, interrupt: &dyn Interrupt) -> EngineResult<Listing> {
        let url = format!("{}/batches?limit=100", self.base);
        let reply = match self.call_classified(&url, None, interrupt) {
            Ok(reply) => reply,
            // The route is not there: an endpoint without the Batch API,
            // which cannot have made a batch either.
            Err((Some(Failure::Status(404 | 405 | 501)), e)) => return Ok(Listing::NoBatchApi(e)),
            Err((_, e)) => return Err(e),
        };
        let list: Value = serde_json::from_str(&reply).map_err(|_| self.unusable(&url, &reply))?;
        Ok(list
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(BatchStatus::parse)
            .find(|b| b.metadata.get(key).and_then(Value::as_str) == Some(value))
            .map_or(Listing::NotThere, Listing::Found))
    }

    /// A file's content (an output or error file).
    pub fn content(&self, file_id: &str, interrupt: &dyn Interrupt) -> EngineResult<String> {
        self.call(&format!("{}/files/{file_id}/content", self.base), None, interrupt)
    }

    fn status_of(&self, url: &str, reply: &str) -> EngineResult<BatchStatus> {
        serde_json::from_str::<Value>(reply)
            .ok()
            .as_ref()
            .and_then(BatchStatus::parse)
            .ok_or_else(|| self.unusable(url, reply))
    }

    fn unusable(&self, url: &str, reply: &str) -> EngineError {
        EngineError::new(
            ErrorKind::Inference,
            format!(
                "{url} gave an answer that is not the Batch API's: {}",
                transport::cut(reply)
            ),
        )
        .with_hint("the endpoint may not offer the Batch API; use the stage without mode => 'batch'")
    }

    /// One call, retried on transient failures, the waits cancellable.
    fn call(&self, url: &str, content: Option<(&str, &[u8])>, interrupt: &dyn Interrupt) -> EngineResult<String> {
        self.call_classified(url, content, interrupt).map_err(|(_, e)| e)
    }

    /// `call`, with the last attempt's failure (None for a cancel).
    fn call_classified(
        &self,
        url: &str,
        content: Option<(&str, &[u8])>,
        interrupt: &dyn Interrupt,
    ) -> Result<String, (Option<Failure>, EngineError)> {
        let request = Request {
            url,
            api_key: self.api_key.as_ref(),
            content,
            limit: FILE_LIMIT,
        };
        let mut jitter = SplitMix(url.len() as u64 ^ 0x5bd1_e995);
        let mut attempt = 0;
        loop {
            attempt += 1;
            interrupt.checkpoint().map_err(|e| (None, e))?;
            let failed = match request.send(&self.agent) {
                Ok(text) => return Ok(text),
                Err(failed) => failed,
            };
            let wait = if failed.failure == Failure::BadReply {
                None
            } else {
                self.policy
                    .next_wait(attempt, failed.failure, failed.retry_after, jitter.unit())
            };
            let Some(wait) = wait else {
                let error = EngineError::new(
                    ErrorKind::Inference,
                    format!("Batch API: {} (after {attempt} attempt(s))", failed.detail),
                )
                .with_hint("check the endpoint's base_url and key, and that it offers the Batch API");
                return Err((Some(failed.failure), error));
            };
            let until = Instant::now() + wait;
            while Instant::now() < until {
                interrupt.checkpoint().map_err(|e| (None, e))?;
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_names_the_chat_route() {
        let line = request_line("i7", &json!({"model": "m", "messages": []}));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["custom_id"], "i7");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], "/v1/chat/completions");
        assert_eq!(v["body"]["model"], "m");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn result_lines_give_the_body_or_the_reason() {
        let ok = r#"{"id": "r1", "custom_id": "i0", "response": {"status_code": 200, "body": {"choices": []}}, "error": null}"#;
        let (id, body) = result_line(ok).unwrap();
        assert_eq!(id, "i0");
        assert_eq!(
            serde_json::from_str::<Value>(&body.unwrap()).unwrap(),
            json!({"choices": []})
        );
        let refused = r#"{"custom_id": "i1", "response": {"status_code": 400, "body": {"error": {"message": "context too long"}}}, "error": null}"#;
        assert_eq!(
            result_line(refused).unwrap().1.unwrap_err(),
            "HTTP 400 in the batch: context too long"
        );
        let expired = r#"{"custom_id": "i2", "response": null, "error": {"code": "batch_expired", "message": "not done in time"}}"#;
        assert_eq!(
            result_line(expired).unwrap().1.unwrap_err(),
            "failed in the batch: not done in time"
        );
        assert!(result_line("{").is_err());
        assert!(result_line(r#"{"response": null}"#).is_err());
    }

    #[test]
    fn statuses_parse_with_files_and_errors() {
        let v = json!({"id": "batch_1", "object": "batch", "status": "completed", "output_file_id": "file-o",
                       "error_file_id": null, "metadata": {"inf_ir_batch": "3"}});
        let s = BatchStatus::parse(&v).unwrap();
        assert!(s.is_over());
        assert_eq!(s.output_file_id.as_deref(), Some("file-o"));
        assert_eq!(s.error_file_id, None);
        assert_eq!(s.metadata["inf_ir_batch"], "3");
        let failed = json!({"id": "b", "status": "failed", "errors": {"data": [{"message": "bad line 3"}]}});
        assert_eq!(
            BatchStatus::parse(&failed).unwrap().errors.as_deref(),
            Some("bad line 3")
        );
        assert!(!BatchStatus::parse(&json!({"id": "b", "status": "in_progress"}))
            .unwrap()
            .is_over());
        assert!(BatchStatus::parse(&json!({"status": "x"})).is_none());
    }

    #[test]
    fn multipart_has_both_fields_and_the_closing_boundary() {
        let body = String::from_utf8(multipart("XyZ", "batch", "f.jsonl", b"{\"a\":1}\n")).unwrap();
        assert!(body.starts_with("--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"));
        assert!(body
            .contains("name=\"file\"; filename=\"f.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n"));
        assert!(body.ends_with("\r\n--XyZ--\r\n"));
    }

    #[test]
    fn base_urls_lose_a_chat_route() {
        let api = BatchApi::new(
            "http://h/v1/chat/completions/",
            None,
            Duration::from_secs(1),
            RetryPolicy::default(),
        );
        assert_eq!(api.base, "http://h/v1");
    }
}
