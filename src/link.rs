//! The state of one connection to a broker — a poller's management API, a consumer's AMQP
//! connection, an alert sink's producer — as the operator needs to hear of it.
//!
//! Every source and sink reports each attempt to its [`Link`]: [`Link::up`] after a success,
//! [`Link::down`] with the error after a failure. The link logs *changes* — reached, lost,
//! reachable again — and while a broker stays down it repeats itself with a doubling pause (30 s,
//! 1 min, 2 min, ... up to 10 min), not at every poll; it counts every failure and every outage.
//! Every line names the broker (its address, credentials redacted), so an error like
//! `BrokerTransportFailure` is never anonymous. The run asks the links whether any broker was
//! reached at all before its startup window closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::emit;
use crate::telemetry::events::{BrokerConnected, BrokerFailed, BrokerRecovered, OutageState};

/// An error from talking to a broker, fit to be shown anywhere: the only way to make one removes
/// credentials from its text, so a secret cannot reach a log or an error line by omission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(String);

impl BrokerError {
    pub fn new(e: impl std::fmt::Display) -> BrokerError {
        BrokerError(crate::redact::redact_userinfo(&e.to_string()))
    }

    /// `what: error`, e.g. `declare exchange mqwatch.alerts: NOT_FOUND`.
    pub fn context(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BrokerError {
        BrokerError::new(format!("{what}: {e}"))
    }
}

impl From<String> for BrokerError {
    fn from(s: String) -> BrokerError {
        BrokerError::new(s)
    }
}

impl From<&str> for BrokerError {
    fn from(s: &str) -> BrokerError {
        BrokerError::new(s)
    }
}

impl From<lapin::Error> for BrokerError {
    fn from(e: lapin::Error) -> BrokerError {
        BrokerError::new(e)
    }
}

const FIRST_REPEAT: Duration = Duration::from_secs(30);
const MAX_REPEAT: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct Link {
    /// What this connection is and where it goes, e.g. `kafka lag poller (127.0.0.1:9092)`.
    name: String,
    up: AtomicBool,
    ever_up: AtomicBool,
    log: Mutex<Outage>,
}

#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    failures: u64,
    logged_at: Option<Instant>,
    repeat: Duration,
    last_error: String,
}

impl Link {
    pub fn new(name: impl Into<String>) -> Arc<Link> {
        Arc::new(Link {
            name: crate::redact::redact_userinfo(&name.into()),
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            log: Mutex::new(Outage::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the broker answered at least once.
    pub fn reached(&self) -> bool {
        self.ever_up.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The most recent error, while the link is down.
    pub fn last_error(&self) -> String {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt succeeded. Cheap when nothing changed (one atomic load).
    pub fn up(&self) {
        if self.up.load(Ordering::Relaxed) {
            return;
        }
        self.up.store(true, Ordering::Relaxed);
        let first = !self.ever_up.swap(true, Ordering::Relaxed);
        let mut o = self.lock();
        if first {
            emit(BrokerConnected {
                broker: &self.name,
                after_failures: o.failures,
            });
        } else {
            emit(BrokerRecovered {
                broker: &self.name,
                down_for_secs: o.since.map_or(0, |s| s.elapsed().as_secs()),
                failures: o.failures,
            });
        }
        *o = Outage::default();
    }

    /// An attempt failed with `error`: counted always, logged when the outage begins and then
    /// with a doubling pause.
    pub fn down(&self, error: &BrokerError) {
        let was_up = self.up.swap(false, Ordering::Relaxed);
        let now = Instant::now();
        let mut o = self.lock();
        o.failures += 1;
        o.last_error = error.to_string();
        let (state, log) = if o.since.is_none() {
            o.since = Some(now);
            o.logged_at = Some(now);
            o.repeat = FIRST_REPEAT;
            let state = match (was_up, self.reached()) {
                (true, _) => OutageState::Lost,
                (false, true) => OutageState::Failed,
                (false, false) => OutageState::NeverReached,
            };
            (state, true)
        } else {
            let due = o.logged_at.is_some_and(|t| now - t >= o.repeat);
            if due {
                o.logged_at = Some(now);
                o.repeat = (o.repeat * 2).min(MAX_REPEAT);
            }
            let state = OutageState::StillDown {
                down_for_secs: o.since.map_or(0, |s| (now - s).as_secs()),
                failures: o.failures,
            };
            (state, due)
        };
        emit(BrokerFailed {
            broker: &self.name,
            error,
            state,
            log,
        });
    }
}

/// Backoff between reconnection attempts: 100 ms doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_counts_failures_and_outages_and_remembers_being_reached() {
        let l = Link::new("rabbitmq amqp://guest:pw@127.0.0.1:5672/%2f (link test)");
        let name = "rabbitmq amqp://guest:***@127.0.0.1:5672/%2f (link test)";
        assert_eq!(l.name(), name);
        let count = |c| crate::telemetry::registry().get(c, name);
        l.down(&"connection refused".into());
        l.down(&"connection refused".into());
        assert!(!l.reached() && !l.is_up());
        assert_eq!((count("broker_failures"), count("broker_outages")), (2, 0));
        assert_eq!(l.last_error(), "connection refused");
        l.up();
        l.up();
        assert!(l.reached() && l.is_up());
        assert_eq!(count("broker_connected"), 1);
        l.down(&"reset by peer".into());
        assert_eq!((count("broker_failures"), count("broker_outages")), (3, 1));
        l.up();
        assert_eq!((count("broker_outages"), count("broker_recovered")), (1, 1));
    }

    #[test]
    fn broker_errors_cannot_carry_a_password() {
        let e = BrokerError::context("cannot connect to amqp://u:hunter2@h:5672", "refused");
        assert_eq!(
            e.to_string(),
            "cannot connect to amqp://u:***@h:5672: refused"
        );
        let e: BrokerError = "guest:pw@127.0.0.1: Invalid URL".into();
        assert!(!e.to_string().contains(":pw@"));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
