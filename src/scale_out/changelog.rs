//! The changelog topic: where the engines of a group save every shard's state, keyed by shard,
//! on the partition of the metrics topic that carries the shard's samples. The newest record of
//! each key is the shard's state; the topic is created log-compacted where the broker allows, so
//! that it keeps little else.
//!
//! [`Changelog`] is the [`Store`] an engine of a group checkpoints into: `commit` returns once the
//! brokers acknowledged every record (`acks=all`). [`read_changelog`] reads partitions from their
//! start to their end as they stand, newest record per key: what an engine given those partitions
//! resumes from.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer as _, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::forward::{send, Deliveries};
use super::partition_for;
use crate::kafka::{redact_error, KafkaConfig};
use crate::state::{Record, StateError, Store};

const COMMIT_WITHIN: Duration = Duration::from_secs(30);
/// How long reading partitions may take before the engine gives up and starts them cold.
const READ_WITHIN: Duration = Duration::from_secs(120);

pub struct Changelog {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    partitions: i32,
    /// Failed deliveries counted at the last commit.
    failed: u64,
    what: String,
}

impl Changelog {
    pub fn new(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Result<Changelog, StateError> {
        let what = format!("changelog topic {topic} ({})", kafka.bootstrap_servers);
        let producer = kafka
            .client(&[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("compression.type", "gzip"),
                ("linger.ms", "2"),
            ])
            .create_with_context(Deliveries::new(what.clone()))
            .map_err(|e| StateError::Broker(redact_error(e, kafka).to_string()))?;
        Ok(Changelog {
            producer,
            topic: topic.into(),
            partitions,
            failed: 0,
            what,
        })
    }
}

impl Store for Changelog {
    fn put(&mut self, records: Vec<Record>) -> Result<(), StateError> {
        for r in records {
            let partition = partition_for(r.key.routing_key().as_bytes(), self.partitions);
            send(
                &self.producer,
                &self.topic,
                &r.key_bytes(),
                &r.value,
                partition,
            )
            .map_err(StateError::Broker)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StateError> {
        self.producer
            .flush(COMMIT_WITHIN)
            .map_err(|e| StateError::Broker(format!("{}: not acknowledged: {e}", self.what)))?;
        let failed = self.producer.context().failed();
        if failed > self.failed {
            let lost = failed - self.failed;
            self.failed = failed;
            return Err(StateError::Broker(format!(
                "{}: {lost} records refused",
                self.what
            )));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// The newest record of each shard key in `partitions` of the changelog `topic`, read from each
/// partition's start to its end as it stands now.
pub fn read_changelog(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<Record>, StateError> {
    let broker =
        |e: rdkafka::error::KafkaError| StateError::Broker(redact_error(e, kafka).to_string());
    let consumer: BaseConsumer = kafka
        .client(&[
            ("group.id", "mqwatch-restore"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "20"),
        ])
        .create()
        .map_err(broker)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(broker)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(broker)?;
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl).map_err(broker)?;
    let mut newest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    let mut left: BTreeSet<i32> = ends.keys().copied().collect();
    let deadline = Instant::now() + READ_WITHIN;
    while !left.is_empty() {
        if Instant::now() >= deadline {
            return Err(StateError::Broker(format!(
                "changelog topic {topic}: partitions {left:?} not read to their end within {READ_WITHIN:?}"
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(broker)?;
        if let Some(key) = m.key() {
            // A record without a value (a tombstone) forgets its key.
            newest.insert(key.to_vec(), m.payload().map(<[u8]>::to_vec));
        }
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            left.remove(&m.partition());
        }
    }
    let mut records = Vec::with_capacity(newest.len());
    for (key, value) in newest {
        let Some(value) = value else { continue };
        match Record::key_from_bytes(&key) {
            Ok(key) => records.push(Record { key, value }),
            Err(e) => {
                tracing::warn!(topic, error = %e, "a changelog record with a key that is no shard's: left out")
            }
        }
    }
    Ok(records)
}
