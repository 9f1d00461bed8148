//! When to retry a chat request and how long to wait first.
//!
//! Rate limits (429) and server errors (5xx), timeouts and dropped
//! connections are worth another try; any other 4xx is the request's own
//! fault and is not. The wait doubles from `base` up to `cap`, with "full
//! jitter" (a uniform draw below the doubled value) so that many clients
//! throttled at once do not come back at once; a server's `Retry-After`
//! overrides it, capped, since a server that says "in an hour" is better
//! reported than waited for inside a statement.

use std::time::Duration;

/// What a failed attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this HTTP status.
    Status(u16),
    /// No answer within the endpoint's timeout.
    Timeout,
    /// Connection refused, reset or closed mid-reply.
    Connection,
    /// The reply arrived but is not valid JSON or breaks the schema.
    BadReply,
}

impl Failure {
    /// Whether another attempt may succeed.
    pub fn is_transient(self) -> bool {
        match self {
            Failure::Status(code) => code == 408 || code == 409 || code == 429 || code >= 500,
            Failure::Timeout | Failure::Connection | Failure::BadReply => true,
        }
    }

    /// Whether, after all its retries, this failure says the endpoint is
    /// unusable for every request (down, overloaded, a wrong key, URL or
    /// model) rather than something about one request (an unusable reply, a
    /// request it refused, a generation that outlasted the timeout). A stage
    /// run stops on the first kind and records the second and goes on.
    pub fn is_endpoint_wide(self) -> bool {
        match self {
            Failure::Connection => true,
            Failure::Status(code) => matches!(code, 401 | 403 | 404 | 429) || code >= 500,
            Failure::Timeout | Failure::BadReply => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt (before jitter).
    pub base: Duration,
    /// Longest wait between attempts, `Retry-After` included.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based)
    /// failed as `failure`, or None when there is no next attempt. `unit` is a
    /// uniform draw in [0, 1) for the jitter.
    pub fn next_wait(
        &self,
        attempt: u32,
        failure: Failure,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || !failure.is_transient() {
            return None;
        }
        if let Some(wait) = retry_after {
            return Some(wait.min(self.cap));
        }
        let doubled = self.base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let ceiling = doubled.min(self.cap.as_secs_f64());
        Some(Duration::from_secs_f64(ceiling * unit.clamp(0.0, 1.0)))
    }
}

/// The longest `Retry-After` taken as given; a larger one (a server's bug,
/// or 10^20 seconds) is cut to this before any arithmetic on it.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as seconds (RFC 9110 also allows an HTTP date: `now` and
/// `parse_date` turn one into a wait), at most `RETRY_AFTER_MAX`.
/// Unparseable or past values give None.
pub fn parse_retry_after(
    value: &str,
    now: std::time::SystemTime,
    parse_date: impl Fn(&str) -> Option<std::time::SystemTime>,
) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_nan() || seconds < 0.0 {
            return None;
        }
        // Clamped as a float: Duration::from_secs_f64 panics past u64::MAX seconds.
        Duration::from_secs_f64(seconds.min(RETRY_AFTER_MAX.as_secs_f64()))
    } else {
        parse_date(value).and_then(|at| at.duration_since(now).ok())?
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn transient_failures() {
        for code in [408, 409, 429, 500, 502, 503, 504] {
            assert!(Failure::Status(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!Failure::Status(code).is_transient(), "{code}");
        }
        assert!(Failure::Timeout.is_transient());
        assert!(Failure::BadReply.is_transient());
    }

    #[test]
    fn endpoint_wide_failures_stop_a_run() {
        for f in [
            Failure::Connection,
            Failure::Status(401),
            Failure::Status(404),
            Failure::Status(429),
            Failure::Status(503),
        ] {
            assert!(f.is_endpoint_wide(), "{f:?}");
        }
        for f in [
            Failure::BadReply,
            Failure::Timeout,
            Failure::Status(400),
            Failure::Status(422),
        ] {
            assert!(!f.is_endpoint_wide(), "{f:?}");
        }
    }

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_below() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let full = |attempt| {
            policy
                .next_wait(attempt, Failure::Status(503), None, 0.999_999)
                .unwrap()
        };
        assert!((full(1).as_secs_f64() - 0.1).abs() < 1e-3);
        assert!((full(2).as_secs_f64() - 0.2).abs() < 1e-3);
        assert!((full(3).as_secs_f64() - 0.4).abs() < 1e-3);
        assert!((full(5).as_secs_f64() - 1.0).abs() < 1e-3, "capped");
        assert_eq!(policy.next_wait(3, Failure::Timeout, None, 0.0), Some(Duration::ZERO));
        let half = policy.next_wait(2, Failure::Connection, None, 0.5).unwrap();
        assert!((half.as_secs_f64() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn no_wait_after_the_last_attempt_or_a_client_error() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_wait(5, Failure::Status(429), None, 0.5), None);
        assert_eq!(policy.next_wait(1, Failure::Status(400), None, 0.5), None);
        assert!(policy.next_wait(4, Failure::Status(429), None, 0.5).is_some());
    }

    #[test]
    fn retry_after_overrides_and_is_capped() {
        let policy = RetryPolicy::default();
        let wait = policy.next_wait(1, Failure::Status(429), Some(Duration::from_secs(3)), 0.1);
        assert_eq!(wait, Some(Duration::from_secs(3)));
        let wait = policy.next_wait(1, Failure::Status(429), Some(Duration::from_secs(3600)), 0.1);
        assert_eq!(wait, Some(policy.cap));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let never = |_: &str| None;
        assert_eq!(parse_retry_after(" 7 ", now, never), Some(Duration::from_secs(7)));
        // Numbers past any sensible wait (or past u64 / Duration) are cut, never a panic.
        for huge in ["99999999999999999999", "1e300", "inf", "18446744073709551615"] {
            assert_eq!(parse_retry_after(huge, now, never), Some(RETRY_AFTER_MAX), "{huge}");
        }
        assert_eq!(parse_retry_after("-1", now, never), None);
        assert_eq!(parse_retry_after("NaN", now, never), None);
        assert_eq!(parse_retry_after("0.25", now, never), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("-1", now, never), None);
        assert_eq!(parse_retry_after("soon", now, never), None);
        let date = |s: &str| (s == "then").then(|| now + Duration::from_secs(12));
        assert_eq!(parse_retry_after("then", now, date), Some(Duration::from_secs(12)));
        let past = |_: &str| Some(SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, past), None);
    }
}
