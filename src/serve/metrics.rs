//! `/metrics`: the engine's own health and what it derives, in the Prometheus (OpenMetrics) text
//! format, built afresh from the board on every scrape so that an entity's series disappear when
//! the entity does.
//!
//! Cardinality is bounded by what is watched: per Kafka group one series per partition (lag in
//! messages and seconds) and four status series; per queue four; per latency stream two; per
//! entity with a learned model two. An entity with no data for [`STALE_MS`] of event time is
//! left out.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Served;
use crate::alert::prometheus_label_name;
use crate::event::ErrorReason;
use crate::status::{Board, EntityKind, EntityStatus, Status};

/// An entity whose data stopped this long ago (event time) is no longer exposed.
pub const STALE_MS: i64 = 5 * 60 * 1000;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter<u64, AtomicU64>>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// OpenMetrics to a client that asks for it (Prometheus does), the classic text format to
/// everyone else (`curl`, `promtool check metrics`).
pub async fn scrape(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut out = String::new();
    match encode(&mut out, &registry(&s.board)) {
        Ok(()) if openmetrics => ([(CONTENT_TYPE, OPENMETRICS)], out).into_response(),
        Ok(()) => ([(CONTENT_TYPE, CLASSIC)], to_classic(&out)).into_response(),
        Err(e) => super::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics could not be encoded: {e}"),
        )
        .into_response(),
    }
}

/// The classic text format from OpenMetrics as the encoder writes it: a counter's HELP and TYPE
/// name its samples (`x_total`), and there is no `# EOF`.
fn to_classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{total} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The board as `/metrics` shows it to a client that does not ask for OpenMetrics.
pub fn classic_text(board: &Board) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry(board));
    to_classic(&out)
}

/// A small builder: one family per metric name, registered on first use.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn counter(&mut self, name: &str, help: &str) -> Counters {
        let f = Counters::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauge(&mut self, name: &str, help: &str) -> Gauges {
        let f = Gauges::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn single_counter(&mut self, name: &str, help: &str, n: u64) {
        let c = Counter::<u64, AtomicU64>::default();
        c.inc_by(n);
        self.registry.register(name, help, c);
    }

    fn single_gauge(&mut self, name: &str, help: &str, v: f64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(v);
        self.registry.register(name, help, g);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn registry(board: &Board) -> Registry {
    let mut m = Metrics {
        registry: Registry::with_prefix("mqwatch"),
    };
    engine(&mut m, board);
    derived(&mut m, board);
    m.registry
}

/// mqwatch's own health: what came in and what was refused, dropped or late, what is tracked and
/// judged, the alerts it raised, its brokers and sinks, its models.
fn engine(m: &mut Metrics, board: &Board) {
    // A gauge of 1 rather than an OpenMetrics info, which the classic text format lacks.
    m.gauge("build_info", "The running build")
        .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
        .set(1.0);
    let input = board.input();
    let workers = board.workers();
    m.single_counter(
        "events_accepted",
        "Metric events accepted into the pipeline",
        input.events,
    );
    let refused = m.counter("events_refused", "Inputs refused, by reason");
    for r in ErrorReason::ALL {
        refused
            .get_or_create(&labels(&[("reason", r.as_str())]))
            .inc_by(input.refused[r as usize]);
    }
    m.single_counter(
        "events_dropped_backpressure",
        "Events dropped because a worker's queue was full",
        input.dropped_backpressure,
    );
    m.single_counter(
        "samples_late",
        "Samples older than the allowed lateness, dropped",
        workers.late,
    );
    m.single_counter(
        "intervals_judged",
        "Intervals closed and judged (per worker, the most of any)",
        workers.intervals_closed,
    );
    m.single_gauge("series", "Series tracked", workers.series as f64);
    m.single_gauge(
        "entities",
        "Entities judged (groups, queues, latency streams, gauges)",
        workers.entities as f64,
    );

    let alerts = m.counter(
        "alerts",
        "Alert episodes fired and resolved, by kind, severity and event",
    );
    for ((kind, severity, state), n) in &board.alerts().counts {
        let event = match state {
            crate::alert::AlertState::Firing => "fired",
            crate::alert::AlertState::Resolved => "resolved",
        };
        let sev = match severity {
            crate::detect::Severity::Warning => "warning",
            crate::detect::Severity::Critical => "critical",
        };
        alerts
            .get_or_create(&labels(&[
                ("kind", kind.as_str()),
                ("severity", sev),
                ("event", event),
            ]))
            .inc_by(*n);
    }
    edges(m);
    let spooled = m.gauge(
        "sink_spooled_alerts",
        "Alerts waiting in a sink's spool for the receiver's confirmation",
    );
    for (sink, n) in board.waiting() {
        spooled
            .get_or_create(&labels(&[("sink", &sink)]))
            .set(n as f64);
    }
    models(m, board);
}

/// The edge counters of the telemetry registry (brokers, sinks, dead letters), one family each,
/// labelled by what they concern.
fn edges(m: &mut Metrics) {
    let snapshot = crate::telemetry::registry().snapshot();
    let mut names: Vec<&'static str> = snapshot.iter().map(|(n, _, _)| *n).collect();
    names.dedup();
    for name in names {
        let Some((help, label)) = crate::telemetry::describe(name) else {
            continue;
        };
        let counts = snapshot.iter().filter(|(n, _, _)| *n == name);
        // Durations are counted in microseconds and shown in seconds.
        if let Some(base) = name.strip_suffix("_us") {
            let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
            m.registry
                .register(format!("{base}_seconds"), help, family.clone());
            for (_, value, n) in counts {
                family
                    .get_or_create(&labels(&[(label, value)]))
                    .inc_by(*n as f64 / 1e6);
            }
            continue;
        }
        let family = m.counter(name, help);
        for (_, value, n) in counts {
            family.get_or_create(&labels(&[(label, value)])).inc_by(*n);
        }
    }
}

fn models(m: &mut Metrics, board: &Board) {
    let loaded = m.gauge("model_loaded", "Learned model loaded, per entity class");
    for class in &board.models {
        loaded.get_or_create(&labels(&[("class", class)])).set(1.0);
    }
    let trusted = m.gauge(
        "model_trusted_entities",
        "Entities whose learned model judges them (trusted), per entity kind",
    );
    let untrusted = m.gauge(
        "model_untrusted_entities",
        "Entities whose learned model stepped aside (out of its depth or still learning)",
    );
    for shard in board.views() {
        for e in shard.entities() {
            if let Some(model) = e.model {
                let l = labels(&[("kind", e.kind.as_str())]);
                let g = if model.trusted { &trusted } else { &untrusted };
                g.get_or_create(&l).inc();
            }
        }
    }
}

/// What the engine derives, per entity, for dashboards: lag, status, queue state, latency
/// quantiles, anomaly scores.
fn derived(m: &mut Metrics, board: &Board) {
    let lag = m.gauge(
        "kafka_partition_lag_messages",
        "Messages a consumer group is behind, per partition",
    );
    let lag_s = m.gauge(
        "kafka_partition_lag_seconds",
        "Age of the oldest message a group has not consumed, per partition",
    );
    let status = m.gauge(
        "kafka_group_status",
        "Consumer group status (OK, WARN, STALL, STOP): 1 for the current one",
    );
    let members = m.gauge("kafka_group_members", "Consumer group members");
    let group_rate = m.gauge(
        "kafka_group_consume_rate",
        "Messages per second a group commits",
    );
    let ready = m.gauge("rabbitmq_queue_ready", "Messages ready in a queue");
    let unacked = m.gauge(
        "rabbitmq_queue_unacked",
        "Messages delivered, not yet acknowledged",
    );
    let consumers = m.gauge("rabbitmq_queue_consumers", "Consumers of a queue");
    let queue_rate = m.gauge(
        "rabbitmq_queue_consume_rate",
        "Messages per second acknowledged (or delivered, without acks)",
    );
    let queue_status = m.gauge(
        "rabbitmq_queue_status",
        "Queue status (OK, WARN, STALL, STOP): 1 for the current one",
    );
    let p50 = m.gauge(
        "latency_p50_seconds",
        "Median end-to-end latency, last interval",
    );
    let p99 = m.gauge(
        "latency_p99_seconds",
        "99th percentile end-to-end latency, last interval",
    );
    let score = m.gauge(
        "entity_anomaly_score",
        "The learned model's score of the entity's last interval",
    );
    let threshold = m.gauge(
        "entity_anomaly_threshold",
        "The score above which the learned model finds an interval abnormal",
    );
    for shard in board.views() {
        // Every entity of a shard is judged at each close: the gap is its own silence.
        for e in shard
            .entities()
            .filter(|e| e.judged_at - e.seen_at <= STALE_MS)
        {
            let base = entity_labels(e);
            let f = &e.figures;
            let set = |family: &Gauges, v: Option<f64>| {
                if let Some(v) = v {
                    family.get_or_create(&base).set(v);
                }
            };
            match e.kind {
                EntityKind::KafkaGroup => {
                    for p in &e.partitions {
                        let mut l = base.clone();
                        l.push(("partition".into(), p.partition.to_string()));
                        if let Some(v) = p.lag {
                            lag.get_or_create(&l).set(v);
                        }
                        if let Some(v) = p.lag_seconds {
                            lag_s.get_or_create(&l).set(v);
                        }
                    }
                    status_series(&status, &base, e.status);
                    set(&members, f.consumers);
                    set(&group_rate, f.consume_rate);
                }
                EntityKind::RabbitmqQueue => {
                    set(&ready, f.backlog);
                    set(&unacked, f.unacked);
                    set(&consumers, f.consumers);
                    set(&queue_rate, f.consume_rate);
                    status_series(&queue_status, &base, e.status);
                }
                EntityKind::Latency => {
                    set(&p50, f.p50_ms.map(|v| v / 1000.0));
                    set(&p99, f.p99_ms.map(|v| v / 1000.0));
                }
                EntityKind::Gauge => {}
            }
            if let Some(model) = e.model {
                let mut l = base.clone();
                l.push(("entity_kind".into(), e.kind.as_str().into()));
                if let Some(s) = model.score {
                    score.get_or_create(&l).set(s);
                }
                threshold.get_or_create(&l).set(model.threshold);
            }
        }
    }
}

fn status_series(family: &Gauges, base: &Labels, current: Status) {
    for st in Status::ALL {
        let mut l = base.clone();
        l.push(("status".into(), st.as_str().into()));
        family
            .get_or_create(&l)
            .set(if st == current { 1.0 } else { 0.0 });
    }
}

/// The entity's labels, with names made valid for Prometheus (`[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with `__`): a gauge's metric name travels as `metric`.
fn entity_labels(e: &EntityStatus) -> Labels {
    e.entity
        .labels
        .iter()
        .map(|(k, v)| {
            let name = if k.as_ref() == "__name__" {
                "metric".to_string()
            } else {
                prometheus_label_name(k)
            };
            (name, v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total 3\n\
                  # HELP a_depth Depth.\n# TYPE a_depth gauge\na_depth{q=\"x\"} 1.0\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total 3\n\
             # HELP a_depth Depth.\n# TYPE a_depth gauge\na_depth{q=\"x\"} 1.0\n"
        );
    }
}
