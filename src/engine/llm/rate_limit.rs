//! Requests-per-minute and tokens-per-minute limits, as token buckets.
//!
//! A bucket refills at `per_minute / 60` a second up to one second's worth
//! (at least one request): a run keeps to the limit over any window of a few
//! seconds, not only on average over the minute, which is what a provider's
//! own limiter checks. Tokens are known only when the reply comes back, so a
//! request takes its estimate (prompt plus `max_tokens`) and the difference
//! is settled afterwards; a bucket may go into debt, and then the next
//! request waits. Time is passed in (seconds from any origin) so the
//! arithmetic is tested without sleeping.

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    per_second: f64,
    capacity: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket for `per_minute` units (> 0) at time `now`.
    pub fn new(per_minute: f64, now: f64) -> Self {
        let per_second = per_minute / 60.0;
        let capacity = per_second.max(1.0);
        Bucket {
            per_second,
            capacity,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.level = (self.level + (now - self.at) * self.per_second).min(self.capacity);
            self.at = now;
        }
    }

    /// Seconds until `amount` can be taken (0: taken now). A request larger
    /// than the bucket goes through once the bucket is full, into debt.
    pub fn take(&mut self, now: f64, amount: f64) -> f64 {
        self.refill(now);
        let needed = amount.min(self.capacity);
        if self.level >= needed {
            self.level -= amount;
            0.0
        } else {
            (needed - self.level) / self.per_second
        }
    }

    /// Give back (positive) or charge (negative) the difference between an
    /// estimate taken and what was used.
    pub fn settle(&mut self, now: f64, returned: f64) {
        self.refill(now);
        self.level = (self.level + returned).min(self.capacity);
    }
}

/// An endpoint's limits; None means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Limits {
    pub fn new(requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>, now: f64) -> Self {
        let bucket = |limit: Option<f64>| limit.filter(|l| *l > 0.0).map(|l| Bucket::new(l, now));
        Limits {
            requests: bucket(requests_per_minute),
            tokens: bucket(tokens_per_minute),
        }
    }

    /// Seconds to wait before a request estimated at `tokens` may start (0:
    /// it starts now and both buckets are charged).
    pub fn admit(&mut self, now: f64, tokens: f64) -> f64 {
        // Check both before charging either, so a wait charges nothing.
        let probe = |b: &Option<Bucket>, amount: f64| b.clone().map_or(0.0, |mut b| b.take(now, amount));
        let wait = probe(&self.requests, 1.0).max(probe(&self.tokens, tokens));
        if wait > 0.0 {
            return wait;
        }
        if let Some(b) = &mut self.requests {
            b.take(now, 1.0);
        }
        if let Some(b) = &mut self.tokens {
            b.take(now, tokens);
        }
        0.0
    }

    /// The request estimated at `estimated` tokens used `used`.
    pub fn settle(&mut self, now: f64, estimated: f64, used: f64) {
        if let Some(b) = &mut self.tokens {
            b.settle(now, estimated - used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests started in `seconds` of simulated time by clients that ask
    /// again as soon as they may.
    fn started(limits: &mut Limits, seconds: f64, tokens: f64) -> usize {
        let (mut now, mut count) = (0.0, 0);
        while now < seconds {
            let wait = limits.admit(now, tokens);
            if wait == 0.0 {
                count += 1;
            } else {
                now += wait;
            }
        }
        count
    }

    #[test]
    fn requests_per_minute_hold_over_short_windows() {
        let mut limits = Limits::new(Some(120.0), None, 0.0);
        // 2 a second plus the first second's burst of 2.
        let n = started(&mut limits, 30.0, 0.0);
        assert!((60..=63).contains(&n), "{n} requests in 30 s at 120/min");
        let mut slow = Limits::new(Some(6.0), None, 0.0);
        let n = started(&mut slow, 60.0, 0.0);
        assert!((6..=7).contains(&n), "{n} requests in 60 s at 6/min");
    }

    #[test]
    fn tokens_per_minute_with_settling() {
        let mut limits = Limits::new(None, Some(6000.0), 0.0); // 100 a second
        assert_eq!(limits.admit(0.0, 100.0), 0.0);
        // The bucket is empty: the next 100 need a second.
        assert!((limits.admit(0.0, 100.0) - 1.0).abs() < 1e-9);
        // The reply used only 40: 60 come back.
        limits.settle(0.0, 100.0, 40.0);
        assert!((limits.admit(0.0, 100.0) - 0.4).abs() < 1e-9);
        // A reply that used more puts the bucket in debt.
        let mut limits = Limits::new(None, Some(6000.0), 0.0);
        assert_eq!(limits.admit(0.0, 100.0), 0.0);
        limits.settle(0.0, 100.0, 300.0);
        assert!((limits.admit(0.0, 100.0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_wait_charges_nothing_and_large_requests_pass_when_full() {
        let mut limits = Limits::new(Some(60.0), Some(60.0), 0.0); // 1 request and 1 token a second
        assert_eq!(limits.admit(0.0, 1.0), 0.0);
        assert!(limits.admit(0.5, 1.0) > 0.0);
        assert_eq!(limits.admit(1.0, 1.0), 0.0);
        // 30 tokens exceed the 1-token bucket: they pass once it is full, into debt.
        assert_eq!(limits.admit(2.0, 30.0), 0.0);
        assert!((limits.admit(3.0, 1.0) - 29.0).abs() < 1e-9);
    }

    #[test]
    fn unlimited() {
        let mut limits = Limits::new(None, Some(0.0), 0.0);
        for _ in 0..1000 {
            assert_eq!(limits.admit(0.0, 1e9), 0.0);
        }
    }
}
