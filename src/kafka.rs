//! Kafka settings shared by the offset/lag poller, the metric-topic consumer, the probe and the
//! alert sink, and the helpers they share: building librdkafka clients from them, and keeping
//! secrets out of logs.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;
use crate::link::BrokerError;
use crate::redact::{is_secret_property, nearest_property};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Any librdkafka property, passed to every client (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub properties: BTreeMap<String, String>,
    /// The `cluster` label of everything from this cluster.
    pub cluster: String,
    /// Topics and consumer groups (regular expressions) to watch, and to leave out.
    pub include_topics: Vec<String>,
    pub exclude_topics: Vec<String>,
    pub include_groups: Vec<String>,
    pub exclude_groups: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Consume metric events (the wire format) from these topics; empty disables.
    pub metrics_topics: Vec<String>,
    pub metrics_group: String,
    /// Where refused metric messages go, with the error and their origin in headers.
    pub dead_letter_topic: String,
    /// Topic alerts are published to; empty disables the sink.
    pub alerts_topic: String,
    /// Alerts kept while the cluster is unreachable; when full, the engine waits.
    pub spool_capacity: usize,
    pub probe: KafkaProbeConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
            cluster: "kafka".into(),
            include_topics: vec![".*".into()],
            exclude_topics: vec!["^__".into(), "^mqwatch\\.".into()],
            include_groups: vec![".*".into()],
            exclude_groups: vec!["^mqwatch".into()],
            poll_interval: Duration::from_secs(5),
            metrics_topics: Vec::new(),
            metrics_group: "mqwatch-metrics".into(),
            dead_letter_topic: "mqwatch.dead-letter".into(),
            alerts_topic: "mqwatch.alerts".into(),
            spool_capacity: 10_000,
            probe: KafkaProbeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaProbeConfig {
    pub enabled: bool,
    pub topic: String,
    /// Partitions of the probe topic when mqwatch creates it.
    pub partitions: i32,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for KafkaProbeConfig {
    fn default() -> Self {
        KafkaProbeConfig {
            enabled: false,
            topic: "mqwatch.probe".into(),
            partitions: 3,
            interval: Duration::from_secs(1),
        }
    }
}

impl KafkaConfig {
    /// A librdkafka client configuration: bootstrap servers, the pass-through properties, then
    /// the component's own settings (which win).
    pub fn client(&self, own: &[(&str, &str)]) -> ClientConfig {
        self.client_with_defaults(&[], own)
    }

    /// As [`client`](Self::client), with `defaults` that the pass-through properties may override.
    pub fn client_with_defaults(
        &self,
        defaults: &[(&str, &str)],
        own: &[(&str, &str)],
    ) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        // Small monitoring requests and alerts should not wait for Nagle's algorithm.
        c.set("socket.nagle.disable", "true");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in own {
            c.set(*k, *v);
        }
        c
    }

    /// The pass-through properties as they may be logged.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if is_secret_property(k) {
                        "***".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.bootstrap_servers.is_empty() {
            return Err("kafka.bootstrap_servers is empty".into());
        }
        use crate::invalid::check_patterns;
        check_patterns("kafka.include_topics", &self.include_topics)?;
        check_patterns("kafka.exclude_topics", &self.exclude_topics)?;
        check_patterns("kafka.include_groups", &self.include_groups)?;
        check_patterns("kafka.exclude_groups", &self.exclude_groups)?;
        self.validate_properties()
    }

    /// Asks librdkafka whether it knows every pass-through property, without connecting. The
    /// error names the property and the nearest known one, never its value.
    fn validate_properties(&self) -> Result<(), Invalid> {
        for (k, v) in &self.properties {
            let mut c = ClientConfig::new();
            c.set(k, v);
            if let Err(e) = c.create_native_config() {
                let unknown = matches!(
                    &e,
                    rdkafka::error::KafkaError::ClientConfig(
                        rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
                        ..
                    )
                );
                return Err(Invalid(if unknown {
                    let hint = nearest_property(k)
                        .map_or(String::new(), |n| format!(" (did you mean `{n}`?)"));
                    format!("kafka.properties: unknown librdkafka property `{k}`{hint}")
                } else if is_secret_property(k) {
                    format!("kafka.properties: invalid value for `{k}`")
                } else {
                    format!("kafka.properties: invalid value {v:?} for `{k}`")
                }));
            }
        }
        Ok(())
    }
}

/// An error from librdkafka, naming the cluster, with any secret that a client echoed replaced.
pub fn redact_error(e: impl std::fmt::Display, cfg: &KafkaConfig) -> BrokerError {
    let mut s = e.to_string();
    for (k, v) in &cfg.properties {
        if is_secret_property(k) && !v.is_empty() {
            s = s.replace(v.as_str(), "***");
        }
    }
    BrokerError::new(s)
}

/// Creates a topic (replication 1) unless it exists already.
pub async fn create_topic(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), BrokerError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        cfg.client(&[]).create().map_err(|e| redact_error(e, cfg))?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    for r in admin
        .create_topics([&t], &opts)
        .await
        .map_err(|e| redact_error(e, cfg))?
    {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(BrokerError::new(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_own_settings_win() {
        let mut cfg = KafkaConfig::default();
        cfg.properties
            .insert("sasl.password".into(), "hunter2".into());
        cfg.properties.insert("sasl.username".into(), "risk".into());
        cfg.properties.insert("acks".into(), "1".into());
        let r = cfg.redacted_properties();
        assert_eq!(r["sasl.password"], "***");
        assert_eq!(r["sasl.username"], "risk");
        assert_eq!(
            redact_error("auth failed for risk/hunter2", &cfg).to_string(),
            "auth failed for risk/***"
        );
        let c = cfg.client(&[("acks", "all")]);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("sasl.username"), Some("risk"));
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn a_misspelled_property_is_refused_by_name_without_its_value() {
        let mut cfg = KafkaConfig::default();
        cfg.properties
            .insert("sasl.pasword".into(), "hunter2".into());
        assert_eq!(cfg.redacted_properties()["sasl.pasword"], "***");
        let e = cfg.validate().unwrap_err().0;
        assert_eq!(
            e,
            "kafka.properties: unknown librdkafka property `sasl.pasword` (did you mean `sasl.password`?)"
        );
        cfg.properties.clear();
        cfg.properties.insert("acks".into(), "banana".into());
        assert!(cfg.validate().unwrap_err().0.contains("banana"));
    }
}
