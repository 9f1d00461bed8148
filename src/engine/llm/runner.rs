//! Many chat requests to one endpoint: up to `concurrency` in flight, within
//! its rate limits, each retried per the policy, results handed back on the
//! calling thread as they finish.
//!
//! The requests run on plain threads that never touch the caller's state
//! (a PostgreSQL backend is single-threaded): they take jobs from a shared
//! queue and send outcomes over a channel. The caller waits on that channel
//! in short slices and polls its `Interrupt` between them, so a cancel is
//! seen within `POLL`. On a cancel the threads are told to stop and left to
//! end by themselves: one in the middle of an HTTP exchange finishes it (at
//! most the endpoint's timeout) and drops its answer; nothing waits for it.

use super::chat::{BadReply, ChatReply};
use super::rate_limit::Limits;
use super::retry::{Failure, RetryPolicy};
use super::transport::{self, Endpoint};
use crate::engine::ivf::kmeans::SplitMix;
use crate::engine::{EngineResult, Interrupt};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the caller checks for a cancel, and the longest sleep a
/// request thread takes before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);

pub struct Job {
    /// The caller's key for the outcome.
    pub key: usize,
    /// The chat request's JSON body.
    pub body: String,
    /// Tokens to reserve under a tokens-per-minute limit (prompt + max output).
    pub estimated_tokens: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        reply: ChatReply,
        attempts: u32,
    },
    /// Every attempt failed, or one failed for good (a 4xx). `text` is the
    /// last reply's text when it came but was unusable.
    Failed {
        /// What went wrong the last time.
        failure: Failure,
        reason: String,
        text: String,
        attempts: u32,
        prompt_tokens: u64,
        completion_tokens: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
}

/// Checks a 2xx body of the job with the given key: the reply, or why it
/// is unusable (then retried).
pub type Check = dyn Fn(usize, &str) -> Result<ChatReply, BadReply> + Send + Sync;

struct Shared {
    endpoint: Endpoint,
    settings: Settings,
    check: Box<Check>,
    queue: Mutex<VecDeque<Job>>,
    limits: Mutex<Limits>,
    origin: Instant,
    stop: AtomicBool,
}

impl Shared {
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Sleep up to `wait`, in slices, unless told to stop; false when stopped.
    fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Wait for the rate limits to admit one request; false when stopped.
    fn admit(&self, tokens: f64) -> bool {
        loop {
            let wait = self.limits.lock().admit(self.now(), tokens);
            if wait <= 0.0 {
                return true;
            }
            if !self.pause(Duration::from_secs_f64(wait.min(60.0))) {
                return false;
            }
        }
    }
}

/// Run `jobs`, calling `on_outcome(key, outcome)` on this thread as each
/// finishes. Returns early with the interrupt's error (and the threads told
/// to stop) when `interrupt` says so.
pub fn run(
    endpoint: Endpoint,
    jobs: Vec<Job>,
    settings: Settings,
    check: Box<Check>,
    interrupt: &dyn Interrupt,
    mut on_outcome: impl FnMut(usize, Outcome) -> EngineResult<()>,
) -> EngineResult<()> {
    let total = jobs.len();
    if total == 0 {
        return Ok(());
    }
    let threads = settings.concurrency.clamp(1, total);
    let limits = Limits::new(settings.requests_per_minute, settings.tokens_per_minute, 0.0);
    let shared = Arc::new(Shared {
        endpoint,
        settings,
        check,
        queue: Mutex::new(jobs.into()),
        limits: Mutex::new(limits),
        origin: Instant::now(),
        stop: AtomicBool::new(false),
    });
    let (sender, receiver) = mpsc::channel();
    for _ in 0..threads {
        let (shared, sender) = (shared.clone(), sender.clone());
        std::thread::spawn(move || work(&shared, &sender));
    }
    drop(sender);
    // However this returns (done, an error, or unwinding from a cancel that
    // `checkpoint` raises), the threads are told to stop.
    let _stop = StopOnDrop(&shared.stop);
    let mut received = 0;
    while received < total {
        if interrupt.pending() {
            interrupt.checkpoint()?; // other interrupts are handled and the run goes on
        }
        match receiver.recv_timeout(POLL) {
            Ok((key, outcome)) => {
                received += 1;
                on_outcome(key, outcome)?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(())
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn work(shared: &Shared, results: &mpsc::Sender<(usize, Outcome)>) {
    let agent = transport::agent(shared.endpoint.timeout);
    let mut jitter = jitter();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(job) = shared.queue.lock().pop_front() else {
            return;
        };
        let Some(outcome) = attempt_all(shared, &agent, &job, &mut jitter) else {
            return;
        };
        if results.send((job.key, outcome)).is_err() {
            return; // the caller is gone
        }
    }
}

/// Every attempt of one job; None when told to stop.
fn attempt_all(shared: &Shared, agent: &ureq::Agent, job: &Job, jitter: &mut SplitMix) -> Option<Outcome> {
    let policy = shared.settings.policy;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if !shared.admit(job.estimated_tokens) {
            return None;
        }
        let (failure, retry_after, reason, text, usage) = match transport::post(agent, &shared.endpoint, &job.body) {
            Ok(body) => match (shared.check)(job.key, &body) {
                Ok(reply) => {
                    let used = (reply.prompt_tokens + reply.completion_tokens) as f64;
                    shared.limits.lock().settle(shared.now(), job.estimated_tokens, used);
                    return Some(Outcome::Done {
                        reply,
                        attempts: attempt,
                    });
                }
                Err(bad) => (
                    Failure::BadReply,
                    None,
                    bad.reason,
                    bad.text,
                    (bad.prompt_tokens, bad.completion_tokens),
                ),
            },
            Err(failed) => (failed.failure, failed.retry_after, failed.detail, String::new(), (0, 0)),
        };
        match policy.next_wait(attempt, failure, retry_after, jitter.unit()) {
            Some(wait) => {
                if !shared.pause(wait) {
                    return None;
                }
            }
            None => {
                return Some(Outcome::Failed {
                    failure,
                    reason,
                    text,
                    attempts: attempt,
                    prompt_tokens: usage.0,
                    completion_tokens: usage.1,
                })
            }
        }
    }
}

/// A generator for backoff jitter, seeded apart per thread and run.
fn jitter() -> SplitMix {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    SplitMix(h.finish())
}

#[cfg(test)]
mod tests {
    use super::super::chat::parse_reply;
    use super::super::fault_server::{FaultServer, Reply};
    use super::*;
    use crate::engine::{EngineError, ErrorKind, NeverInterrupt};
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({"type": "object", "properties": {"instruction": {"type": "string", "minLength": 1}},
               "required": ["instruction"], "additionalProperties": false})
    }

    fn check() -> Box<Check> {
        let schema = schema();
        Box::new(move |_, body| parse_reply(body, &schema))
    }

    fn settings(concurrency: usize) -> Settings {
        Settings {
            concurrency,
            policy: RetryPolicy {
                max_attempts: 5,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(200),
            },
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }

    fn jobs(n: usize) -> Vec<Job> {
        (0..n)
            .map(|key| Job {
                key,
                body: json!({"model": "m", "n": key}).to_string(),
                estimated_tokens: 10.0,
            })
            .collect()
    }

    fn endpoint(server: &FaultServer) -> Endpoint {
        Endpoint {
            url: server.url(),
            api_key: Some(super::super::secret::Secret::new("sk-test-123456")),
            timeout: Duration::from_secs(5),
        }
    }

    fn collect(server: &FaultServer, n: usize, settings: Settings) -> Vec<Outcome> {
        let mut out = vec![None; n];
        run(
            endpoint(server),
            jobs(n),
            settings,
            check(),
            &NeverInterrupt,
            |key, outcome| {
                out[key] = Some(outcome);
                Ok(())
            },
        )
        .unwrap();
        out.into_iter().map(|o| o.expect("every job has an outcome")).collect()
    }

    #[test]
    fn each_fault_is_retried_until_a_good_reply() {
        let server = FaultServer::start(vec![
            Reply::TooManyRequests { retry_after: "0" },
            Reply::ServerError,
            Reply::Malformed,
            Reply::SchemaViolation,
            Reply::Good,
        ]);
        let out = collect(&server, 1, settings(1));
        match &out[0] {
            Outcome::Done { reply, attempts } => {
                assert_eq!(*attempts, 5);
                assert_eq!(reply.value["instruction"], "only peer-reviewed sources");
            }
            other => panic!("{other:?}"),
        }
        assert!(server.saw_bearer("sk-test-123456"));
    }

    #[test]
    fn a_reply_that_never_conforms_fails_with_its_text() {
        let server = FaultServer::start(vec![Reply::SchemaViolation; 5]);
        match &collect(&server, 1, settings(1))[0] {
            Outcome::Failed {
                failure,
                reason,
                text,
                attempts,
                ..
            } => {
                assert_eq!(*failure, Failure::BadReply);
                assert_eq!(*attempts, 5);
                assert!(reason.contains("breaks its schema"), "{reason}");
                assert!(text.contains("\"verdict\""), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_error_is_not_retried_and_the_key_is_scrubbed() {
        let server = FaultServer::start(vec![Reply::Unauthorized]);
        match &collect(&server, 1, settings(1))[0] {
            Outcome::Failed {
                failure,
                reason,
                attempts,
                ..
            } => {
                assert_eq!(*failure, Failure::Status(401));
                assert!(failure.is_endpoint_wide());
                assert_eq!(*attempts, 1);
                assert!(reason.starts_with("HTTP 401"), "{reason}");
                assert!(!reason.contains("sk-test-123456"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_run_in_parallel_up_to_the_concurrency() {
        let server = FaultServer::start(vec![Reply::SlowGood { millis: 150 }; 16]);
        let out = collect(&server, 16, settings(8));
        assert!(out.iter().all(|o| matches!(o, Outcome::Done { .. })));
        assert_eq!(server.max_in_flight(), 8);
        let server = FaultServer::start(vec![Reply::SlowGood { millis: 20 }; 4]);
        collect(&server, 4, settings(1));
        assert_eq!(server.max_in_flight(), 1);
    }

    struct CancelAfter(Instant);

    impl Interrupt for CancelAfter {
        fn pending(&self) -> bool {
            Instant::now() >= self.0
        }
        fn checkpoint(&self) -> EngineResult<()> {
            if self.pending() {
                Err(EngineError::new(
                    ErrorKind::Cancelled,
                    "canceling statement due to user request",
                ))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_cancel_returns_while_a_request_stalls() {
        let server = FaultServer::start(vec![Reply::Stall { millis: 4000 }; 4]);
        let started = Instant::now();
        let cancel = CancelAfter(started + Duration::from_millis(200));
        let result = run(endpoint(&server), jobs(4), settings(2), check(), &cancel, |_, _| Ok(()));
        assert_eq!(result.unwrap_err().kind, ErrorKind::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
