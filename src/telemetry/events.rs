//! Internal events: each struct is one thing that can happen at an edge. Its `emit` writes one log
//! line with fixed field names and bumps one counter, named in its doc, labelled by what it
//! concerns; call sites say `emit(DeadLettered { .. })`. A new event is a struct here.

use std::fmt::Display;

use super::registry::registry;

/// Something that happened at an edge: logs and counts in one act.
pub trait InternalEvent {
    fn emit(self);
}

pub fn emit(event: impl InternalEvent) {
    event.emit();
}

/// What an edge counter counts and the name of its one label, for `/metrics`.
pub fn describe(counter: &str) -> Option<(&'static str, &'static str)> {
    Some(match counter {
        "broker_connected" => ("Brokers answering for the first time", "broker"),
        "broker_failures" => ("Failed attempts to reach a broker", "broker"),
        "broker_outages" => ("Connections lost after they were up", "broker"),
        "broker_recovered" => ("Brokers answering again after failures", "broker"),
        "dead_lettered" => ("Metric messages refused and dead-lettered", "source"),
        "offsets_unreadable" => ("Polls that could not read a group's offsets", "group"),
        "passive_declare_failed" => ("Queue polls by passive declare that failed", "queue"),
        "alerts_confirmed" => ("Alerts a broker confirmed", "sink"),
        "alerts_unroutable" => ("Confirmed alerts no bound queue took", "sink"),
        "alerts_undelivered" => ("Alerts not delivered by the shutdown deadline", "sink"),
        "alerts_rejected" => ("Alerts an HTTP receiver refused for good (a 4xx)", "sink"),
        "sources_stopped" => ("Live sources ended by an unrecoverable error", "source"),
        "polls" => ("Polls of a broker's state (offsets, queues)", "source"),
        "poll_duration_us" => ("Time spent polling a broker's state", "source"),
        "checkpoint_records" => ("Shard states written to the checkpoint store", "store"),
        "state_write_failures" => ("Writes to the checkpoint store that failed", "store"),
        _ => return None,
    })
}

/// `broker_connected{broker}`: a broker answered for the first time.
pub struct BrokerConnected<'a> {
    pub broker: &'a str,
    pub after_failures: u64,
}

impl InternalEvent for BrokerConnected<'_> {
    fn emit(self) {
        tracing::info!(broker = %self.broker, failures = self.after_failures, "connected");
        registry().add("broker_connected", self.broker, 1);
    }
}

/// `broker_failures{broker}`: an attempt to reach a broker failed. Logged only when `log` (the
/// first failure of an outage, then with a doubling pause); always counted.
pub struct BrokerFailed<'a, E: Display> {
    pub broker: &'a str,
    pub error: E,
    pub state: OutageState,
    pub log: bool,
}

/// Where a failure stands in its outage, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageState {
    /// Never reached yet.
    NeverReached,
    /// It was up until this attempt.
    Lost,
    /// It was reached before, and this is the first failure since it last answered.
    Failed,
    /// Still down since an earlier failure.
    StillDown { down_for_secs: u64, failures: u64 },
}

impl<E: Display> InternalEvent for BrokerFailed<'_, E> {
    fn emit(self) {
        registry().add("broker_failures", self.broker, 1);
        if self.state == OutageState::Lost {
            registry().add("broker_outages", self.broker, 1);
        }
        if !self.log {
            return;
        }
        let (broker, error) = (self.broker, &self.error);
        match self.state {
            OutageState::NeverReached => {
                tracing::warn!(broker = %broker, error = %error, "cannot connect; retrying with backoff")
            }
            OutageState::Lost => {
                tracing::warn!(broker = %broker, error = %error, "lost; retrying with backoff")
            }
            OutageState::Failed => {
                tracing::warn!(broker = %broker, error = %error, "failed; retrying with backoff")
            }
            OutageState::StillDown {
                down_for_secs,
                failures,
            } => tracing::warn!(
                broker = %broker,
                error = %error,
                down_for_secs,
                failures,
                "still unreachable"
            ),
        }
    }
}

/// `broker_recovered{broker}`: a broker answers again after failures.
pub struct BrokerRecovered<'a> {
    pub broker: &'a str,
    pub down_for_secs: u64,
    pub failures: u64,
}

impl InternalEvent for BrokerRecovered<'_> {
    fn emit(self) {
        tracing::info!(
            broker = %self.broker,
            down_for_secs = self.down_for_secs,
            failures = self.failures,
            "reachable again"
        );
        registry().add("broker_recovered", self.broker, 1);
    }
}

/// `dead_lettered{source}`: a metric message could not be used and went to the dead-letter
/// exchange or topic, with the error in its headers.
pub struct DeadLettered<'a, E: Display> {
    pub source: &'a str,
    /// Where in the source: a delivery tag, or partition and offset.
    pub position: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for DeadLettered<'_, E> {
    fn emit(self) {
        tracing::warn!(source = %self.source, position = %self.position, error = %self.error, "refused metric message, dead-lettered");
        registry().add("dead_lettered", self.source, 1);
    }
}

/// `offsets_unreadable{group}`: a consumer group's committed offsets could not be read this poll.
pub struct OffsetsUnreadable<'a, E: Display> {
    pub group: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for OffsetsUnreadable<'_, E> {
    fn emit(self) {
        tracing::warn!(group = %self.group, error = %self.error, "cannot read committed offsets");
        registry().add("offsets_unreadable", self.group, 1);
    }
}

/// `passive_declare_failed{queue}`: a queue polled without the management API could not be read.
pub struct PassiveDeclareFailed<'a, E: Display> {
    pub queue: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for PassiveDeclareFailed<'_, E> {
    fn emit(self) {
        tracing::warn!(queue = %self.queue, error = %self.error, "passive declare failed");
        registry().add("passive_declare_failed", self.queue, 1);
    }
}

/// `alerts_confirmed{sink}`: alerts a broker confirmed.
pub struct AlertsConfirmed<'a> {
    pub sink: &'a str,
    pub count: u64,
}

impl InternalEvent for AlertsConfirmed<'_> {
    fn emit(self) {
        tracing::debug!(sink = %self.sink, count = self.count, "alerts confirmed");
        registry().add("alerts_confirmed", self.sink, self.count);
    }
}

/// `alerts_unroutable{sink}`: a confirmed alert that no bound queue took. Logged the first time
/// per sink only.
pub struct AlertUnroutable<'a> {
    pub sink: &'a str,
    pub id: &'a str,
    pub routing_key: &'a str,
}

impl InternalEvent for AlertUnroutable<'_> {
    fn emit(self) {
        if registry().get("alerts_unroutable", self.sink) == 0 {
            tracing::warn!(
                sink = %self.sink,
                id = %self.id,
                routing_key = %self.routing_key,
                "no queue is bound to the alert exchange for this alert: nobody received it \
                 (bind a queue, e.g. with routing key '#'; further unroutable alerts are only counted)"
            );
        }
        registry().add("alerts_unroutable", self.sink, 1);
    }
}

/// `polls{source}` and `poll_duration_us{source}`: a poller asked a broker for its state (offsets,
/// queues), successfully or not, and it took this long. Logged at debug.
pub struct Polled<'a> {
    pub source: &'a str,
    pub took: std::time::Duration,
}

impl InternalEvent for Polled<'_> {
    fn emit(self) {
        tracing::debug!(source = %self.source, seconds = self.took.as_secs_f64(), "polled");
        registry().add("polls", self.source, 1);
        registry().add(
            "poll_duration_us",
            self.source,
            self.took.as_micros() as u64,
        );
    }
}

/// `alerts_rejected{sink}`: an HTTP receiver refused an alert with a 4xx that retrying cannot
/// change; the alert is passed over so that the ones behind it are delivered.
pub struct AlertRejected<'a> {
    pub sink: &'a str,
    pub id: &'a str,
    pub status: u16,
    pub reason: &'a str,
}

impl InternalEvent for AlertRejected<'_> {
    fn emit(self) {
        tracing::error!(sink = %self.sink, alert = %self.id, status = self.status, reason = %self.reason, "alert refused by the receiver; passed over");
        registry().add("alerts_rejected", self.sink, 1);
    }
}

/// `alerts_undelivered{sink}`: an alert a sink could not deliver by the shutdown deadline.
pub struct AlertUndelivered<'a> {
    pub sink: &'a str,
    pub id: &'a str,
}

impl InternalEvent for AlertUndelivered<'_> {
    fn emit(self) {
        tracing::error!(sink = %self.sink, id = %self.id, "alert not delivered");
        registry().add("alerts_undelivered", self.sink, 1);
    }
}

/// `sources_stopped{source}`: a live source ended with an error it could not recover from.
pub struct SourceStopped<'a, E: Display> {
    pub source: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for SourceStopped<'_, E> {
    fn emit(self) {
        tracing::error!(source = %self.source, error = %self.error, "source stopped");
        registry().add("sources_stopped", self.source, 1);
    }
}

/// `state_write_failures{store}`: a checkpoint could not be written or made durable. The engine
/// goes on judging and alerting; what it learned since the last good checkpoint is at risk.
pub struct StateWriteFailed<'a, E: Display> {
    pub store: &'a str,
    pub error: E,
}

impl<E: Display> InternalEvent for StateWriteFailed<'_, E> {
    fn emit(self) {
        tracing::error!(store = %self.store, error = %self.error, "cannot write the checkpoint");
        registry().add("state_write_failures", self.store, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter an edge event bumps has a help text and a label name for `/metrics`.
    #[test]
    fn every_edge_counter_is_described_for_metrics() {
        let l = "described-by-test";
        emit(BrokerConnected {
            broker: l,
            after_failures: 0,
        });
        for state in [OutageState::Lost, OutageState::Failed] {
            emit(BrokerFailed {
                broker: l,
                error: "x",
                state,
                log: false,
            });
        }
        emit(BrokerRecovered {
            broker: l,
            down_for_secs: 1,
            failures: 1,
        });
        emit(DeadLettered {
            source: l,
            position: "0",
            error: "x",
        });
        emit(OffsetsUnreadable {
            group: l,
            error: "x",
        });
        emit(PassiveDeclareFailed {
            queue: l,
            error: "x",
        });
        emit(AlertsConfirmed { sink: l, count: 1 });
        emit(AlertUnroutable {
            sink: l,
            id: "a",
            routing_key: "k",
        });
        emit(Polled {
            source: l,
            took: std::time::Duration::from_millis(3),
        });
        emit(AlertRejected {
            sink: l,
            id: "a",
            status: 400,
            reason: "x",
        });
        emit(AlertUndelivered { sink: l, id: "a" });
        emit(SourceStopped {
            source: l,
            error: "x",
        });
        let ours: Vec<&str> = registry()
            .snapshot()
            .into_iter()
            .filter(|(_, label, _)| label == l)
            .map(|(name, _, _)| name)
            .collect();
        assert!(ours.len() >= 13, "{ours:?}");
        for name in ours {
            assert!(
                describe(name).is_some(),
                "{name} is not described for /metrics"
            );
        }
    }
}
