//! Sources' measurements onto the metrics topic, for the engine that owns them.
//!
//! A [`Forward`] is the [`Feed`] a live source writes into when engines share the work: instead
//! of this engine's pipeline, its events go to the metrics topic, one message (a JSON array) per
//! shard and flush, keyed by the shard's routing key on the partition [`partition_for`] gives. A
//! poller or probe measures what every engine can measure, so its `Forward` drops what this
//! engine does not own: each shard has one writer, its owner. A consumer of a metric stream,
//! whose every message reaches one engine only, forwards everything it gets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

use super::{partition_for, Ownership};
use crate::event::{ErrorReason, RawEvent};
use crate::kafka::{redact_error, KafkaConfig};
use crate::link::BrokerError;
use crate::pipeline::{Feed, ShardKey};
use crate::telemetry::InputStats;

/// A message body past this size is sent at once rather than at the next flush.
const MAX_BODY: usize = 256 << 10;
const FLUSH_WITHIN: Duration = Duration::from_secs(30);

/// Counts the messages librdkafka could not deliver (after its own retries).
pub(crate) struct Deliveries {
    failed: AtomicU64,
    what: String,
}

impl Deliveries {
    pub(crate) fn new(what: String) -> Deliveries {
        Deliveries {
            failed: AtomicU64::new(0),
            what,
        }
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(to = %self.what, error = %e, "a message could not be delivered (more are counted, not logged)");
            }
            crate::telemetry::registry().add("messages_undelivered", &self.what, 1);
        }
    }
}

/// Sends one message, waiting while librdkafka's queue is full.
pub(crate) fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    partition: i32,
) -> Result<(), String> {
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(payload)
        .partition(partition);
    for _ in 0..6000 {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.to_string()),
        }
    }
    Err("the producer's queue stayed full for 30 s".into())
}

/// This engine's producer to the metrics topic, shared by its sources.
pub struct Producer {
    inner: ThreadedProducer<Deliveries>,
    topic: String,
    ownership: Arc<Ownership>,
}

impl Producer {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        ownership: Arc<Ownership>,
    ) -> Result<Arc<Producer>, BrokerError> {
        let inner = kafka
            .client(&[
                ("linger.ms", "5"),
                ("acks", "all"),
                ("enable.idempotence", "true"),
            ])
            .create_with_context(Deliveries::new(format!("metrics topic {topic}")))
            .map_err(|e| redact_error(e, kafka))?;
        Ok(Arc::new(Producer {
            inner,
            topic: topic.into(),
            ownership,
        }))
    }

    /// A feed for one source: `owned_only` for pollers and probes (see the module docs).
    pub fn feed(self: &Arc<Self>, owned_only: bool) -> Forward {
        Forward {
            producer: self.clone(),
            owned_only,
            pending: HashMap::new(),
            key: String::new(),
            stats: InputStats::default(),
        }
    }
}

/// One message under way: its partition, its body (a JSON array, still open), its events.
struct Pending {
    partition: i32,
    body: Vec<u8>,
}

pub struct Forward {
    producer: Arc<Producer>,
    owned_only: bool,
    /// By routing key.
    pending: HashMap<String, Pending>,
    key: String,
    stats: InputStats,
}

impl Forward {
    fn send(&self, key: &str, mut p: Pending) {
        p.body.push(b']');
        let producer = &self.producer;
        if let Err(e) = send(
            &producer.inner,
            &producer.topic,
            key.as_bytes(),
            &p.body,
            p.partition,
        ) {
            tracing::error!(topic = %producer.topic, error = %e, "cannot send measurements to the metrics topic");
            crate::telemetry::registry().add("messages_undelivered", &producer.topic, 1);
        }
    }

    fn send_all(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (key, p) in pending {
            self.send(&key, p);
        }
    }
}

impl Feed for Forward {
    fn push(&mut self, ev: &RawEvent<'_>) {
        ShardKey::routing_key_of(ev, &mut self.key);
        let ownership = &self.producer.ownership;
        let partition = partition_for(self.key.as_bytes(), ownership.partitions());
        if self.owned_only && !ownership.holds(partition) {
            return;
        }
        self.stats.events += 1;
        self.stats.see_ts(ev.ts);
        let p = match self.pending.get_mut(self.key.as_str()) {
            Some(p) => {
                p.body.push(b',');
                p
            }
            None => self.pending.entry(self.key.clone()).or_insert(Pending {
                partition,
                body: vec![b'['],
            }),
        };
        serde_json::to_writer(&mut p.body, ev).expect("writing JSON to memory cannot fail");
        if p.body.len() >= MAX_BODY {
            let full = self
                .pending
                .remove(self.key.as_str())
                .expect("just written");
            let key = std::mem::take(&mut self.key);
            self.send(&key, full);
            self.key = key;
        }
    }

    fn reject(&mut self, reason: ErrorReason) {
        self.stats.count_error(reason);
    }

    /// Sends what is pending: a live source calls this after each poll.
    fn advance_to(&mut self, _ts: i64) {
        self.send_all();
    }

    fn sync(&mut self) {
        self.send_all();
        let producer = &self.producer;
        if let Err(e) = producer.inner.flush(FLUSH_WITHIN) {
            tracing::error!(topic = %producer.topic, error = %e, "measurements not confirmed by the metrics topic");
        }
    }

    fn stats(&self) -> &InputStats {
        &self.stats
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.sync();
    }
}
