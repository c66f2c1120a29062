//! RabbitMQ as a source of metric events, three ways:
//!
//! - [`QueuePoller`] reads every queue's depth, consumers and totals from the management HTTP API
//!   each `poll_interval` and feeds them as the well-known `rabbitmq_*` events. Without the API it
//!   falls back to passive declares of the configured queues (ready and consumer counts), and
//!   says so once.
//! - [`MetricsConsumer`] consumes metric events in the wire format from a queue. Deliveries are
//!   acknowledged only after their events are applied to engine state; a message that cannot be
//!   parsed is republished to the dead-letter exchange with the error in `x-mqwatch-error`.
//! - [`Probe`] publishes timestamped messages through a configured exchange and consumes them back,
//!   recording `message_latency_ms` for the probe queue.
//!
//! Each runs on its own thread with its own small runtime and [`Feed`], reconnecting with
//! backoff after failures, until the stop flag is raised.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use regex::Regex;
use serde::Deserialize;

use super::LiveSource;
use crate::event::{names, LabelVec, RawEvent};
use crate::link::{BrokerError, Link};
use crate::pipeline::Feed;
use crate::rabbitmq::{connect_with, redact, RabbitConfig};
use crate::telemetry::emit;
use crate::telemetry::events::{DeadLettered, PassiveDeclareFailed, Polled};

/// Deliveries acknowledged together, once applied.
const ACK_EVERY: usize = 256;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `body` on a current-thread runtime until it returns or `stop` is raised.
pub(crate) fn run_async<F: std::future::Future<Output = Result<(), BrokerError>>>(
    stop: &Arc<AtomicBool>,
    body: F,
) -> Result<(), BrokerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BrokerError::new)?;
    rt.block_on(async {
        tokio::select! {
            r = body => r,
            _ = stopped(stop) => Ok(()),
        }
    })
}

pub(crate) async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn push_sample(ingest: &mut dyn Feed, ts: i64, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: LabelVec = labels
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    ingest.push(&RawEvent {
        ts,
        name: Cow::Borrowed(name),
        labels,
        value,
        kind: None,
    });
}

/// The management API's view of one queue.
#[derive(Debug, Deserialize)]
struct QueueInfo {
    name: String,
    vhost: String,
    messages_ready: Option<f64>,
    messages_unacknowledged: Option<f64>,
    consumers: Option<f64>,
    consumer_utilisation: Option<f64>,
    message_stats: Option<QueueStats>,
}

#[derive(Debug, Deserialize)]
struct QueueStats {
    publish: Option<f64>,
    deliver_get: Option<f64>,
    ack: Option<f64>,
    redeliver: Option<f64>,
}

const COLUMNS: &str =
    "name,vhost,messages_ready,messages_unacknowledged,consumers,consumer_utilisation,\
message_stats.publish,message_stats.deliver_get,message_stats.ack,message_stats.redeliver";

pub struct QueuePoller {
    cfg: RabbitConfig,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    http: ureq::Agent,
    cluster: String,
    on_fallback: bool,
    amqp: Option<(Connection, Channel)>,
    link: Arc<Link>,
    /// How many queues the last poll matched, to say so when it changes.
    matched: Option<usize>,
}

impl QueuePoller {
    pub fn new(cfg: &RabbitConfig) -> Result<Self, BrokerError> {
        cfg.validate().map_err(BrokerError::new)?;
        let compile = |ps: &[String]| {
            ps.iter()
                .map(|p| Regex::new(p).map_err(BrokerError::new))
                .collect::<Result<Vec<_>, _>>()
        };
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(true)
            .build()
            .new_agent();
        Ok(QueuePoller {
            include: compile(&cfg.include)?,
            exclude: compile(&cfg.exclude)?,
            cluster: cfg.cluster.clone(),
            cfg: cfg.clone(),
            http,
            on_fallback: false,
            amqp: None,
            link: Link::new(format!(
                "rabbitmq poller (management {}, {})",
                if cfg.management_url.is_empty() {
                    "off"
                } else {
                    cfg.management_url.as_str()
                },
                redact(&cfg.uri)
            )),
            matched: None,
        })
    }

    /// Says which queues a poll matched, when that changes (the first poll included).
    fn tell_matched(&mut self, names: &[String]) {
        if self.matched == Some(names.len()) {
            return;
        }
        self.matched = Some(names.len());
        let which = if names.is_empty() {
            " (none matches yet)".to_string()
        } else {
            format!(": {}", super::first_names(names))
        };
        tracing::info!(
            broker = %self.link.name(),
            cluster = %self.cluster,
            "watching {} queues{which}",
            names.len()
        );
    }

    fn wanted(&self, vhost: &str, queue: &str) -> bool {
        (self.cfg.vhosts.is_empty() || self.cfg.vhosts.iter().any(|v| v == vhost))
            && self.include.iter().any(|r| r.is_match(queue))
            && !self.exclude.iter().any(|r| r.is_match(queue))
    }

    fn get(&self, path: &str) -> Result<String, BrokerError> {
        let url = format!("{}{path}", self.cfg.management_url.trim_end_matches('/'));
        let (user, pass) = self.cfg.management_credentials();
        let auth = format!("Basic {}", BASE64.encode(format!("{user}:{pass}")));
        let mut resp = self
            .http
            .get(&url)
            .header("authorization", &auth)
            .call()
            .map_err(|e| format!("GET {}: {e}", redact(&url)))?;
        resp.body_mut().read_to_string().map_err(BrokerError::new)
    }

    /// One poll: every wanted queue's state as events stamped `ts`. Returns how many queues.
    pub async fn poll(&mut self, ts: i64, ingest: &mut dyn Feed) -> Result<usize, BrokerError> {
        if self.cfg.management_url.is_empty() {
            return self
                .poll_passive(ts, ingest, "no management URL configured")
                .await;
        }
        let queues = match self.management_queues() {
            Ok(q) => q,
            Err(e) => return self.poll_passive(ts, ingest, &e.to_string()).await,
        };
        if self.on_fallback {
            tracing::info!("management API available again; polling it");
            self.on_fallback = false;
        }
        if self.cluster.is_empty() {
            self.cluster = self.cluster_name();
        }
        let mut names = Vec::new();
        for q in queues.iter().filter(|q| self.wanted(&q.vhost, &q.name)) {
            names.push(format!(
                "{}{}",
                if q.vhost == "/" {
                    String::new()
                } else {
                    format!("{}/", q.vhost)
                },
                q.name
            ));
            let l = [
                ("cluster", self.cluster.as_str()),
                ("queue", q.name.as_str()),
                ("vhost", q.vhost.as_str()),
            ];
            let s = q.message_stats.as_ref();
            let values = [
                (names::RABBIT_READY, q.messages_ready),
                (names::RABBIT_UNACKED, q.messages_unacknowledged),
                (names::RABBIT_CONSUMERS, q.consumers),
                (names::RABBIT_UTILISATION, q.consumer_utilisation),
                // A queue that has seen no traffic yet has no totals: they are zero.
                (
                    names::RABBIT_PUBLISHED,
                    Some(s.and_then(|s| s.publish).unwrap_or(0.0)),
                ),
                (
                    names::RABBIT_DELIVERED,
                    Some(s.and_then(|s| s.deliver_get).unwrap_or(0.0)),
                ),
                (
                    names::RABBIT_ACKED,
                    Some(s.and_then(|s| s.ack).unwrap_or(0.0)),
                ),
                (
                    names::RABBIT_REDELIVERED,
                    Some(s.and_then(|s| s.redeliver).unwrap_or(0.0)),
                ),
            ];
            for (name, v) in values {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    push_sample(ingest, ts, name, &l, v);
                }
            }
        }
        self.tell_matched(&names);
        Ok(names.len())
    }

    fn management_queues(&self) -> Result<Vec<QueueInfo>, BrokerError> {
        let body = self.get(&format!("/api/queues?columns={COLUMNS}"))?;
        serde_json::from_str(&body)
            .map_err(|e| BrokerError::context("management API answered unexpectedly", e))
    }

    fn cluster_name(&self) -> String {
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        self.get("/api/cluster-name")
            .ok()
            .and_then(|b| serde_json::from_str::<Name>(&b).ok())
            .map_or_else(|| "rabbitmq".into(), |n| n.name)
    }

    async fn poll_passive(
        &mut self,
        ts: i64,
        ingest: &mut dyn Feed,
        why: &str,
    ) -> Result<usize, BrokerError> {
        if !self.on_fallback {
            tracing::warn!(
                reason = why,
                queues = self.cfg.queues.len(),
                "management API unavailable; polling the configured queues by passive declare (ready and consumers only)"
            );
            self.on_fallback = true;
        }
        if self.cfg.queues.is_empty() {
            return Err(BrokerError::new(format!(
                "management API unavailable ({why}) and no rabbitmq.queues configured"
            )));
        }
        if self
            .amqp
            .as_ref()
            .is_none_or(|(c, _)| !c.status().connected())
        {
            let conn = connect_with(&self.cfg.uri, "mqwatch-poller", &self.cfg.tls).await?;
            let ch = conn.create_channel().await.map_err(BrokerError::new)?;
            self.amqp = Some((conn, ch));
        }
        let vhost = self
            .cfg
            .uri
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.vhost)
            .unwrap_or_else(|_| "/".into());
        let cluster = if self.cluster.is_empty() {
            "rabbitmq".to_string()
        } else {
            self.cluster.clone()
        };
        let mut n = 0;
        for name in &self.cfg.queues {
            let (_, ch) = self.amqp.as_ref().expect("connected above");
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match ch
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) => {
                    let l = [
                        ("cluster", cluster.as_str()),
                        ("queue", name.as_str()),
                        ("vhost", vhost.as_str()),
                    ];
                    push_sample(
                        ingest,
                        ts,
                        names::RABBIT_READY,
                        &l,
                        q.message_count() as f64,
                    );
                    push_sample(
                        ingest,
                        ts,
                        names::RABBIT_CONSUMERS,
                        &l,
                        q.consumer_count() as f64,
                    );
                    n += 1;
                }
                Err(e) => {
                    // A failed passive declare closes the channel: reopen it for the next queue.
                    emit(PassiveDeclareFailed {
                        queue: name,
                        error: &e,
                    });
                    self.amqp = None;
                    return Err(BrokerError::new(format!("queue {name}: {e}")));
                }
            }
        }
        Ok(n)
    }
}

impl LiveSource for QueuePoller {
    fn name(&self) -> String {
        "rabbitmq-poller".into()
    }

    fn is_poller(&self) -> bool {
        true
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        mut self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        let every = self.cfg.poll_interval;
        run_async(&stop, async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let ts = now_ms();
                let started = std::time::Instant::now();
                let polled = self.poll(ts, ingest).await;
                emit(Polled {
                    source: self.link.name(),
                    took: started.elapsed(),
                });
                match polled {
                    Ok(_) => self.link.up(),
                    Err(e) => self.link.down(&e),
                }
                ingest.advance_to(ts);
            }
        })
    }
}

/// Consumes metric events from a queue, at least once.
pub struct MetricsConsumer {
    cfg: RabbitConfig,
    link: Arc<Link>,
}

impl MetricsConsumer {
    pub fn new(cfg: &RabbitConfig) -> Self {
        MetricsConsumer {
            cfg: cfg.clone(),
            link: Link::new(format!(
                "rabbitmq metric queue {} ({})",
                cfg.metrics_queue,
                redact(&cfg.uri)
            )),
        }
    }

    async fn session(&self, ingest: &mut dyn Feed) -> Result<(), BrokerError> {
        let queue = self.cfg.metrics_queue.as_str();
        let conn = connect_with(&self.cfg.uri, "mqwatch-metrics", &self.cfg.tls).await?;
        let ch = conn.create_channel().await.map_err(BrokerError::new)?;
        ch.basic_qos(ACK_EVERY as u16 * 2, BasicQosOptions::default())
            .await
            .map_err(BrokerError::new)?;
        let dlx = conn.create_channel().await.map_err(BrokerError::new)?;
        dlx.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::new)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        dlx.exchange_declare(
            self.cfg.dead_letter_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declare {}: {e}", self.cfg.dead_letter_exchange))?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "mqwatch".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::new(format!("consume {queue}: {e}")))?;
        self.link.up();
        tracing::info!(queue, "consuming metric events");
        let mut unacked: Option<u64> = None;
        let mut pending = 0usize;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
            match next {
                Ok(Some(Ok(delivery))) => {
                    self.apply(&delivery, ingest, &dlx).await?;
                    unacked = Some(delivery.delivery_tag);
                    pending += 1;
                    if pending < ACK_EVERY {
                        continue;
                    }
                }
                Ok(Some(Err(e))) => return Err(BrokerError::new(e)),
                Ok(None) => {
                    return Err(BrokerError::new(format!(
                        "consumer on {queue} was cancelled"
                    )))
                }
                Err(_) => ingest.advance_to(now_ms()),
            }
            if let Some(tag) = unacked.take() {
                // Acknowledge only what the workers have applied.
                ingest.sync();
                ch.basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .map_err(BrokerError::new)?;
                pending = 0;
            }
        }
    }

    async fn apply(
        &self,
        d: &lapin::message::Delivery,
        ingest: &mut dyn Feed,
        dlx: &Channel,
    ) -> Result<(), BrokerError> {
        let refused = super::decode(&d.data, ingest, false);
        for e in refused {
            emit(DeadLettered {
                source: &self.cfg.metrics_queue,
                position: &format!("delivery {}", d.delivery_tag),
                error: &e,
            });
            let mut headers = FieldTable::default();
            headers.insert(
                "x-mqwatch-error".into(),
                AMQPValue::LongString(e.to_string().into()),
            );
            headers.insert(
                "x-mqwatch-reason".into(),
                AMQPValue::LongString(e.reason.as_str().into()),
            );
            headers.insert(
                "x-mqwatch-source".into(),
                AMQPValue::LongString(self.cfg.metrics_queue.as_str().into()),
            );
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            let confirm = dlx
                .basic_publish(
                    self.cfg.dead_letter_exchange.as_str().into(),
                    self.cfg.metrics_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await
                .map_err(BrokerError::new)?;
            // The original is acknowledged only once its dead letter is safely with the broker.
            if confirm.await.map_err(BrokerError::new)?.is_nack() {
                return Err("dead-letter publish refused".into());
            }
        }
        Ok(())
    }
}

impl LiveSource for MetricsConsumer {
    fn name(&self) -> String {
        format!("rabbitmq-queue {}", self.cfg.metrics_queue)
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        run_async(&stop, async move {
            let mut backoff = crate::link::Backoff::new(Duration::from_secs(10));
            loop {
                // A session ends only on failure; unacknowledged deliveries come back on the next.
                let e = self.session(ingest).await.unwrap_err();
                if self.link.is_up() {
                    backoff.reset();
                }
                self.link.down(&e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        })
    }
}

/// End-to-end latency through the broker, measured with probe messages.
pub struct Probe {
    cfg: RabbitConfig,
    link: Arc<Link>,
}

impl Probe {
    pub fn new(cfg: &RabbitConfig) -> Self {
        Probe {
            cfg: cfg.clone(),
            link: Link::new(format!(
                "rabbitmq probe {} ({})",
                cfg.probe.queue,
                redact(&cfg.uri)
            )),
        }
    }

    async fn session(&self, ingest: &mut dyn Feed, cluster: &str) -> Result<(), BrokerError> {
        let p = &self.cfg.probe;
        let conn = connect_with(&self.cfg.uri, "mqwatch-probe", &self.cfg.tls).await?;
        let ch = conn.create_channel().await.map_err(BrokerError::new)?;
        ch.queue_declare(
            p.queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declare probe queue {}: {e}", p.queue))?;
        if !p.exchange.is_empty() {
            ch.queue_bind(
                p.queue.as_str().into(),
                p.exchange.as_str().into(),
                p.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::new(format!("bind probe queue: {e}")))?;
        }
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = ch
            .basic_consume(
                p.queue.as_str().into(),
                "mqwatch-probe".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::new)?;
        let vhost = self
            .cfg
            .uri
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.vhost)
            .unwrap_or_else(|_| "/".into());
        let key = if p.exchange.is_empty() {
            p.queue.as_str()
        } else {
            p.routing_key.as_str()
        };
        self.link.up();
        let mut tick = tokio::time::interval(p.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let sent = now_ms().to_string();
                    ch.basic_publish(p.exchange.as_str().into(), key.into(), BasicPublishOptions::default(), sent.as_bytes(), BasicProperties::default())
                        .await
                        .map_err(BrokerError::new)?;
                }
                d = consumer.next() => {
                    let d = d.ok_or("probe consumer cancelled")?.map_err(BrokerError::new)?;
                    let now = now_ms();
                    if let Some(sent) = std::str::from_utf8(&d.data).ok().and_then(|s| s.parse::<i64>().ok()) {
                        let l = [("cluster", cluster), ("queue", p.queue.as_str()), ("vhost", vhost.as_str())];
                        push_sample(ingest, now, names::LATENCY, &l, (now - sent).max(0) as f64);
                    }
                    ingest.advance_to(now);
                }
            }
        }
    }
}

impl LiveSource for Probe {
    fn name(&self) -> String {
        format!("rabbitmq-probe {}", self.cfg.probe.queue)
    }

    fn is_poller(&self) -> bool {
        true
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        let cluster = if self.cfg.cluster.is_empty() {
            "rabbitmq".to_string()
        } else {
            self.cfg.cluster.clone()
        };
        run_async(&stop, async move {
            let mut backoff = crate::link::Backoff::new(Duration::from_secs(10));
            loop {
                let e = self.session(ingest, &cluster).await.unwrap_err();
                if self.link.is_up() {
                    backoff.reset();
                }
                self.link.down(&e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_queues() {
        let cfg = RabbitConfig {
            include: vec!["^risk\\.".into()],
            vhosts: vec!["/".into()],
            ..Default::default()
        };
        let p = QueuePoller::new(&cfg).unwrap();
        assert!(p.wanted("/", "risk.scoring"));
        assert!(!p.wanted("/", "notifications.email"));
        assert!(!p.wanted("other", "risk.scoring"));
        let p = QueuePoller::new(&RabbitConfig::default()).unwrap();
        assert!(
            !p.wanted("/", "mqwatch.probe") && !p.wanted("/", "amq.gen-x") && p.wanted("v", "q")
        );
    }
}
