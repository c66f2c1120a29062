//! Alerts over HTTP, behind the spool like the broker sinks (retries with backoff, nothing
//! dropped while the receiver is down): a generic JSON webhook, and Alertmanager's
//! `POST /api/v2/alerts`, re-sent while firing as Alertmanager expects of its clients.
//!
//! A 2xx answer confirms an alert. A 408, 429 or 5xx, or no answer, is a failure the spool
//! retries. Any other 4xx means the receiver will never take this alert: it is logged, counted
//! (`alerts_rejected{sink}`) and passed over, so one bad alert cannot hold up the rest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::spool::{Publisher, SpoolSink};
use super::{Sink, SinkError};
use crate::alert::{prometheus_label_name, Alert, AlertState};
pub use crate::config::{AlertmanagerConfig, WebhookConfig};
use crate::link::BrokerError;
use crate::telemetry::emit;
use crate::telemetry::events::AlertRejected;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// What an answer means for the alerts sent.
fn judge(sink: &str, status: u16, body: &str, alerts: &[Alert]) -> Result<(), BrokerError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(BrokerError::new(format!("HTTP {status}: {}", clip(body)))),
        _ => {
            for a in alerts {
                emit(AlertRejected {
                    sink,
                    id: &a.id,
                    status,
                    reason: &clip(body),
                });
            }
            Ok(())
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

pub struct WebhookPublisher {
    name: String,
    cfg: WebhookConfig,
    http: ureq::Agent,
}

impl WebhookPublisher {
    pub fn new(name: &str, cfg: &WebhookConfig) -> Self {
        WebhookPublisher {
            name: name.into(),
            cfg: cfg.clone(),
            http: agent(cfg.timeout),
        }
    }
}

impl Publisher for WebhookPublisher {
    /// Reached when the URL answers at all (any status): a receiver may refuse a bare GET.
    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.http
            .get(&self.cfg.url)
            .call()
            .map(|_| ())
            .map_err(|e| BrokerError::new(format!("{}: {e}", self.cfg.url)))
    }

    async fn publish(&mut self, alerts: &[Alert]) -> Result<(), BrokerError> {
        for a in alerts {
            let mut req = self.http.post(&self.cfg.url);
            for (k, v) in &self.cfg.headers {
                req = req.header(k, v);
            }
            let mut resp = req
                .header("content-type", "application/json")
                .send(a.to_json())
                .map_err(|e| BrokerError::new(format!("{}: {e}", self.cfg.url)))?;
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            judge(&self.name, status, &body, std::slice::from_ref(a))?;
        }
        Ok(())
    }
}

pub struct AlertmanagerPublisher {
    name: String,
    cfg: AlertmanagerConfig,
    http: ureq::Agent,
    /// Where the alerts link back to: mqwatch's API.
    generator: String,
}

impl AlertmanagerPublisher {
    pub fn new(name: &str, cfg: &AlertmanagerConfig, external_url: &str) -> Self {
        AlertmanagerPublisher {
            name: name.into(),
            cfg: cfg.clone(),
            http: agent(cfg.timeout),
            generator: external_url.trim_end_matches('/').to_string(),
        }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.url.trim_end_matches('/'))
    }
}

impl Publisher for AlertmanagerPublisher {
    async fn connect(&mut self) -> Result<(), BrokerError> {
        let url = self.endpoint("/-/ready");
        let resp = self
            .http
            .get(&url)
            .call()
            .map_err(|e| BrokerError::new(format!("{url}: {e}")))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s => Err(BrokerError::new(format!("{url}: HTTP {s}, not ready"))),
        }
    }

    async fn publish(&mut self, alerts: &[Alert]) -> Result<(), BrokerError> {
        let now = OffsetDateTime::now_utc();
        let valid_for = 4 * self.cfg.resend_interval;
        let body: Vec<Value> = alerts
            .iter()
            .map(|a| to_alertmanager(a, now, valid_for, &self.generator))
            .collect();
        let url = self.endpoint("/api/v2/alerts");
        let mut resp = self
            .http
            .post(&url)
            .send_json(&body)
            .map_err(|e| BrokerError::new(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        judge(&self.name, status, &text, alerts)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// One alert as Alertmanager takes it: labels (`alertname` is the kind), annotations (summary,
/// figures), `startsAt`, and `endsAt` — the resolution time, or while firing a time a little
/// beyond the next re-send, so that an mqwatch that dies lets its alerts expire.
pub fn to_alertmanager(
    a: &Alert,
    now: OffsetDateTime,
    valid_for: Duration,
    generator: &str,
) -> Value {
    let mut labels: BTreeMap<String, String> = a
        .labels
        .iter()
        .map(|(k, v)| (prometheus_label_name(k), v.clone()))
        .collect();
    labels.insert("alertname".into(), a.kind.as_str().into());
    labels.insert(
        "severity".into(),
        format!("{:?}", a.severity).to_lowercase(),
    );
    let mut description = format!(
        "{} {} (expected {}, score {})",
        a.metric, a.observed, a.expected, a.score
    );
    for (k, v) in &a.context {
        description.push_str(&format!("; {k} {v}"));
    }
    let ends_at = match a.state {
        AlertState::Resolved => at_ms(a.resolved_at.unwrap_or(a.ts)),
        AlertState::Firing => now + valid_for,
    };
    json!({
        "labels": labels,
        "annotations": {
            "summary": a.summary,
            "description": description,
            "detector": a.detector,
            "mqwatch_id": a.id,
        },
        "startsAt": rfc3339(at_ms(a.started_at)),
        "endsAt": rfc3339(ends_at),
        "generatorURL": format!("{generator}/api/v1/alerts/{}", a.id),
    })
}

/// The Alertmanager sink: the spool, and the open alerts it sends again every
/// `resend_interval` (Alertmanager forgets an alert whose `endsAt` passed).
pub struct AlertmanagerSink {
    inner: SpoolSink,
    open: BTreeMap<String, Alert>,
    resend: Duration,
    last_resend: Instant,
}

impl AlertmanagerSink {
    pub fn new(inner: SpoolSink, resend: Duration) -> Self {
        AlertmanagerSink {
            inner,
            open: BTreeMap::new(),
            resend,
            last_resend: Instant::now(),
        }
    }
}

impl Sink for AlertmanagerSink {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn send(&mut self, alert: &Alert) -> Result<(), SinkError> {
        match alert.state {
            AlertState::Firing => {
                self.open.insert(alert.id.clone(), alert.clone());
            }
            AlertState::Resolved => {
                self.open.remove(&alert.id);
            }
        }
        self.inner.send(alert)
    }

    fn tick(&mut self, now: Instant) -> Result<(), SinkError> {
        if now.duration_since(self.last_resend) < self.resend {
            return Ok(());
        }
        self.last_resend = now;
        for a in self.open.values() {
            self.inner.resend(a)?;
        }
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<Vec<Alert>, SinkError> {
        self.inner.close(deadline)
    }

    fn link(&self) -> Option<std::sync::Arc<crate::link::Link>> {
        self.inner.link()
    }

    fn waiting(&self) -> Option<u64> {
        self.inner.waiting()
    }

    fn confirmed(&self) -> u64 {
        self.inner.confirmed()
    }

    fn summary(&self) -> Option<String> {
        self.inner.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        Alert {
            state,
            labels: [
                ("queue".to_string(), "ledger".to_string()),
                ("app.name".to_string(), "x".to_string()),
            ]
            .into(),
            resolved_at: (state == AlertState::Resolved).then_some(1_795_000_090_000),
            ..Alert::example()
        }
    }

    #[test]
    fn a_firing_alert_is_valid_until_past_the_next_resend_and_a_resolved_one_ends_when_it_did() {
        let now = at_ms(1_795_000_200_000);
        let firing = to_alertmanager(
            &alert(AlertState::Firing),
            now,
            Duration::from_secs(240),
            "http://mq:9464",
        );
        assert_eq!(firing["labels"]["alertname"], "consumer_stall");
        assert_eq!(firing["labels"]["severity"], "critical");
        assert_eq!(firing["labels"]["app_name"], "x", "label names made valid");
        assert_eq!(firing["startsAt"], rfc3339(at_ms(1_795_000_000_000)));
        assert_eq!(firing["endsAt"], rfc3339(at_ms(1_795_000_440_000)));
        assert_eq!(
            firing["generatorURL"],
            "http://mq:9464/api/v1/alerts/consumer_stall-1"
        );
        assert!(firing["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("ready_messages 40"));
        let resolved = to_alertmanager(
            &alert(AlertState::Resolved),
            now,
            Duration::from_secs(240),
            "",
        );
        assert_eq!(resolved["endsAt"], rfc3339(at_ms(1_795_000_090_000)));
    }

    #[test]
    fn server_errors_are_retried_and_other_refusals_are_passed_over() {
        let a = [alert(AlertState::Firing)];
        assert!(judge("w", 202, "", &a).is_ok());
        assert!(judge("w", 503, "busy", &a).is_err());
        assert!(judge("w", 429, "slow down", &a).is_err());
        assert!(
            judge("w", 400, "bad", &a).is_ok(),
            "a 400 never gets better"
        );
    }
}
