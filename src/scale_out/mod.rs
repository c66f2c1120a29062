//! Several engines, one watch: `mqwatch run` instances that share the work as members of one
//! Kafka consumer group, so that no single machine is the only watcher.
//!
//! ```text
//!  pollers (every engine)          metrics topic, partitioned          engines (consumer group)
//!  Kafka offsets, RabbitMQ   ──►  by shard: cluster/topic or     ──►  each judges the shards of
//!  queues, probes: publish        cluster/vhost/queue (murmur2)        the partitions it holds,
//!  only the shards of the                                              restored from the changelog
//!  partitions their engine holds  changelog topic: newest state  ◄──   and saved there; alerts
//!                                 of every shard, same partitions      to the alert sinks
//! ```
//!
//! One rule carries it: **the engine that holds a partition of the metrics topic owns its
//! shards** — it alone polls their brokers' state ([`Forward`] drops the others' measurements),
//! judges them, and saves them to the changelog. Its metric consumer ([`Member`]) follows the
//! group: given partitions, it reads their shards' newest states from the changelog before any of
//! their samples (as Kafka Streams restores a state store); losing them, it saves them first. An
//! engine that dies without letting go loses its partitions when the group's session times out,
//! and the engines that get them resume from what it saved: its last checkpoint, and every shard
//! saved before an alert it raised left it (the write-ahead of [`crate::state`]).

mod changelog;
mod forward;
mod member;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use changelog::{read_changelog, Changelog};
pub use forward::{Forward, Producer};
pub use member::Member;

use crate::config::Config;
use crate::invalid::Invalid;
use crate::kafka::{redact_error, KafkaConfig};
use crate::link::{Backoff, BrokerError};

/// `[scale_out]`: engines that share the watch as one consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleOutConfig {
    /// The `cluster` label of the `[[kafka]]` section whose brokers carry the engines' topics and
    /// group (its bootstrap servers and properties are used).
    pub cluster: String,
    /// The consumer group the engines join.
    pub group: String,
    /// Where every measurement goes, keyed and partitioned by shard.
    pub metrics_topic: String,
    /// Where every shard's state is saved (log-compacted where the broker allows), partitioned as
    /// the metrics topic.
    pub changelog_topic: String,
    /// Partitions of both topics when mqwatch creates them: at most this many engines share the
    /// work.
    pub partitions: i32,
    /// How long the group waits for an engine that stopped answering before its partitions move
    /// to the others.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
}

impl Default for ScaleOutConfig {
    fn default() -> Self {
        ScaleOutConfig {
            cluster: "kafka".into(),
            group: "mqwatch-engines".into(),
            metrics_topic: "mqwatch.metrics".into(),
            changelog_topic: "mqwatch.state".into(),
            partitions: 12,
            session_timeout: Duration::from_secs(6),
        }
    }
}

impl ScaleOutConfig {
    pub fn validate(&self, kafka: &[crate::kafka::KafkaConfig]) -> Result<(), Invalid> {
        if !kafka.iter().any(|k| k.cluster == self.cluster) {
            let known: Vec<&str> = kafka.iter().map(|k| k.cluster.as_str()).collect();
            return Err(format!(
                "scale_out.cluster names no [[kafka]] section (their clusters: {known:?})"
            )
            .into());
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err("scale_out.partitions must be 1 to 1024".into());
        }
        if self.metrics_topic.is_empty() || self.changelog_topic.is_empty() {
            return Err("scale_out.metrics_topic and changelog_topic must be named".into());
        }
        if self.metrics_topic == self.changelog_topic {
            return Err("scale_out.metrics_topic and changelog_topic must differ".into());
        }
        if self.session_timeout < Duration::from_secs(1) {
            return Err("scale_out.session_timeout must be at least 1s".into());
        }
        if kafka
            .iter()
            .any(|k| k.metrics_topics.contains(&self.metrics_topic))
        {
            return Err(
                "kafka.metrics_topics names the scale_out metrics topic: the engines read it as a group already"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What an engine of a group runs with: its share of the partitions, its producer to the metrics
/// topic (for its sources), its membership (the metric consumer of its pipeline), and the
/// changelog it checkpoints into.
pub struct Group {
    pub ownership: Arc<Ownership>,
    pub producer: Arc<Producer>,
    pub member: Member,
    pub changelog: Changelog,
}

impl Group {
    /// Makes sure the metrics and changelog topics exist with the same partitions (creating them
    /// if they do not), retrying until `config.engine.startup_timeout`, and builds the pieces.
    pub fn join(config: &Config, cfg: &ScaleOutConfig) -> Result<Group, BrokerError> {
        let kafka = config
            .kafka
            .iter()
            .find(|k| k.cluster == cfg.cluster)
            .ok_or_else(|| BrokerError::new("scale_out.cluster names no [[kafka]] section"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::new)?;
        let deadline = Instant::now() + config.engine.startup_timeout;
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let partitions = loop {
            match rt.block_on(ensure_topics(kafka, cfg)) {
                Ok(n) => break n,
                Err(e) if Instant::now() >= deadline => {
                    return Err(BrokerError::new(format!(
                        "scale-out topics on {}: {e}",
                        kafka.bootstrap_servers
                    )))
                }
                Err(_) => std::thread::sleep(backoff.next_delay()),
            }
        };
        let ownership = Arc::new(Ownership::new(partitions));
        let producer = Producer::new(kafka, &cfg.metrics_topic, ownership.clone())?;
        let member = Member::new(
            kafka,
            cfg,
            ownership.clone(),
            config.state.checkpoint_interval,
        );
        let changelog =
            Changelog::new(kafka, &cfg.changelog_topic, partitions).map_err(BrokerError::new)?;
        tracing::info!(
            group = %cfg.group,
            "one of the engines of group {}: measurements through {}, state in {} ({partitions} partitions)",
            cfg.group,
            cfg.metrics_topic,
            cfg.changelog_topic
        );
        Ok(Group {
            ownership,
            producer,
            member,
            changelog,
        })
    }
}

/// Creates the metrics topic and the changelog (log-compacted where the broker allows) with
/// `cfg.partitions` unless they exist, and returns their partitions, which must agree.
async fn ensure_topics(kafka: &KafkaConfig, cfg: &ScaleOutConfig) -> Result<i32, BrokerError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka
        .client(&[])
        .create()
        .map_err(|e| redact_error(e, kafka))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    fn create(topic: &str, partitions: i32, compact: bool) -> NewTopic<'_> {
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        if compact {
            t.set("cleanup.policy", "compact")
        } else {
            t
        }
    }
    for (topic, compact) in [(&cfg.metrics_topic, false), (&cfg.changelog_topic, true)] {
        let mut result = admin
            .create_topics([&create(topic, cfg.partitions, compact)], &opts)
            .await;
        if compact && !matches!(&result, Ok(r) if r.iter().all(Result::is_ok)) {
            // A broker that takes no topic configs still keeps the newest record of each key,
            // among the others: what a restore reads.
            let already = matches!(&result, Ok(r) if r.iter().all(|r| matches!(r, Err((_, RDKafkaErrorCode::TopicAlreadyExists)))));
            if !already {
                result = admin
                    .create_topics([&create(topic, cfg.partitions, false)], &opts)
                    .await;
            }
        }
        for r in result.map_err(|e| redact_error(e, kafka))? {
            if let Err((name, code)) = r {
                if code != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(BrokerError::new(format!(
                        "cannot create topic {name}: {code}"
                    )));
                }
            }
        }
    }
    let meta: BaseConsumer = kafka
        .client(&[("group.id", "mqwatch-metadata")])
        .create()
        .map_err(|e| redact_error(e, kafka))?;
    let count = |topic: &str| -> Result<i32, BrokerError> {
        let m = meta
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| redact_error(e, kafka))?;
        let n = m
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(BrokerError::new(format!(
                "topic {topic} has no partitions yet"
            )));
        }
        Ok(n)
    };
    let (metrics, changelog) = (count(&cfg.metrics_topic)?, count(&cfg.changelog_topic)?);
    if metrics != changelog {
        return Err(BrokerError::new(format!(
            "topic {} has {metrics} partitions and {} has {changelog}: they must agree",
            cfg.metrics_topic, cfg.changelog_topic
        )));
    }
    Ok(metrics)
}

/// The partition a key belongs to, as Kafka's Java client and librdkafka's `murmur2_random`
/// partitioner choose it: murmur2 of the key, made positive, modulo the partitions. A producer
/// outside mqwatch that keys its metric messages by shard this way lands them where mqwatch does.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as i32) % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Which partitions of the metrics topic this engine holds now: written by its [`Member`] as the
/// group assigns and revokes them, read by its pollers at every poll.
#[derive(Debug)]
pub struct Ownership {
    held: Vec<AtomicBool>,
}

impl Ownership {
    pub fn new(partitions: i32) -> Ownership {
        Ownership {
            held: (0..partitions.max(1))
                .map(|_| AtomicBool::new(false))
                .collect(),
        }
    }

    pub fn partitions(&self) -> i32 {
        self.held.len() as i32
    }

    pub fn holds(&self, partition: i32) -> bool {
        self.held
            .get(partition as usize)
            .is_some_and(|h| h.load(Ordering::Acquire))
    }

    /// Whether this engine owns the shard with this routing key.
    pub fn owns(&self, routing_key: &str) -> bool {
        self.holds(partition_for(routing_key.as_bytes(), self.partitions()))
    }

    pub fn set(&self, partition: i32, held: bool) {
        if let Some(h) = self.held.get(partition as usize) {
            h.store(held, Ordering::Release);
        }
    }

    /// The partitions held, in order.
    pub fn held(&self) -> Vec<i32> {
        (0..self.partitions()).filter(|&p| self.holds(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_the_java_clients() {
        // The cases of Kafka's own UtilsTest.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(
            partition_for(b"foobar", 12),
            (-790_332_482i32 & 0x7fff_ffff) % 12
        );
    }

    #[test]
    fn ownership_follows_what_the_group_gives_and_takes() {
        let o = Ownership::new(4);
        assert!(o.held().is_empty());
        o.set(1, true);
        o.set(3, true);
        o.set(9, true);
        assert_eq!(o.held(), [1, 3]);
        let key = (0..100)
            .map(|i| format!("pay/t{i}"))
            .find(|k| partition_for(k.as_bytes(), 4) == 3)
            .unwrap();
        assert!(o.owns(&key));
        o.set(3, false);
        assert!(!o.owns(&key));
    }
}
