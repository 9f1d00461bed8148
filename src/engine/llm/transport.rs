//! One HTTP POST of a chat request, classified for the retry policy.
//!
//! The API key travels only in the Authorization header, and is scrubbed
//! from every text that comes back, replies included, before anything can
//! store, log or return it: some providers echo a key in their 401
//! message, and a proxy or test server may echo the request's headers in
//! a 200 reply.

use super::chat::truncate;
use super::retry::{parse_retry_after, Failure};
use super::secret::Secret;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The chat completions URL (`.../v1/chat/completions`).
    pub url: String,
    pub api_key: Option<Secret>,
    /// For the whole exchange, connect to last byte.
    pub timeout: Duration,
}

/// A failed attempt: the kind (for the retry policy), the server's
/// Retry-After, and what to tell a person (key scrubbed, body cut).
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub failure: Failure,
    pub retry_after: Option<Duration>,
    pub detail: String,
}

/// Most of an error body kept for messages.
const DETAIL_CHARS: usize = 500;

/// The chat completions URL of a base URL such as `http://host:8000/v1`
/// (a URL that already ends in `/chat/completions` is kept).
pub fn completions_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/chat/completions") {
        base.to_string()
    } else {
        format!("{base}/chat/completions")
    }
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("inf_ir/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// POST `body` (JSON) to the endpoint; the response body on a 2xx.
pub fn post(agent: &ureq::Agent, endpoint: &Endpoint, body: &str) -> Result<String, FailedAttempt> {
    let request = Request {
        url: &endpoint.url,
        api_key: endpoint.api_key.as_ref(),
        content: Some(("application/json", body.as_bytes())),
        limit: REPLY_LIMIT,
    };
    request.send(agent)
}

/// The most a chat reply may be (ureq's default).
const REPLY_LIMIT: u64 = 10 << 20;

/// One HTTP exchange: a POST when there is content, else a GET.
pub struct Request<'a> {
    pub url: &'a str,
    pub api_key: Option<&'a Secret>,
    /// Content type and body.
    pub content: Option<(&'a str, &'a [u8])>,
    /// The most response bytes read.
    pub limit: u64,
}

impl Request<'_> {
    /// The response body on a 2xx; otherwise the failure, classified. The
    /// key is scrubbed from either.
    pub fn send(&self, agent: &ureq::Agent) -> Result<String, FailedAttempt> {
        let scrub = |text: String| match self.api_key {
            Some(key) => key.scrub(&text),
            None => text,
        };
        let auth = self.api_key.map(|key| format!("Bearer {}", key.expose()));
        let sent = match self.content {
            Some((content_type, body)) => {
                let mut request = agent.post(self.url).header("Content-Type", content_type);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body)
            }
            None => {
                let mut request = agent.get(self.url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(FailedAttempt {
                    failure: failure_of(&e),
                    retry_after: None,
                    detail: scrub(format!("{} did not answer: {e}", self.url)),
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now(), |d| httpdate::parse_http_date(d).ok()));
        let text = response.body_mut().with_config().limit(self.limit).read_to_string();
        match text {
            Ok(text) if (200..300).contains(&status) => Ok(scrub(text)),
            Ok(text) => Err(FailedAttempt {
                failure: Failure::Status(status),
                retry_after,
                detail: scrub(format!("HTTP {status}: {}", cut(&text))),
            }),
            Err(e) => Err(FailedAttempt {
                failure: failure_of(&e),
                retry_after,
                detail: scrub(format!("HTTP {status}, reading the body failed: {e}")),
            }),
        }
    }
}

/// A transport error as the retry policy sees it.
fn failure_of(e: &ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(_) => Failure::Timeout,
        _ => Failure::Connection,
    }
}

pub(super) fn cut(text: &str) -> String {
    let text = text.trim();
    let kept = truncate(text, DETAIL_CHARS);
    if kept.len() < text.len() {
        format!("{kept}...")
    } else {
        kept.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_never_prints_its_key() {
        let endpoint = Endpoint {
            url: "http://x".into(),
            api_key: Some(Secret::new("sk-live-abcdef123456")),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{endpoint:?}").contains("abcdef"));
    }

    #[test]
    fn completions_urls() {
        assert_eq!(
            completions_url("http://h:8000/v1/"),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            completions_url("https://api.openai.com/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn nothing_listening_is_a_connection_failure() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let endpoint = Endpoint {
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            api_key: None,
            timeout: Duration::from_secs(2),
        };
        let e = post(&agent(endpoint.timeout), &endpoint, "{}").unwrap_err();
        assert_eq!(e.failure, Failure::Connection);
        assert!(e.detail.contains("did not answer"), "{}", e.detail);
    }
}
