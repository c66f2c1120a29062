//! A `[[kafka]]` section: the offset/lag poller, optionally the metric-topic consumer and the
//! probe, and the alert topic behind its spool.

use super::{BuildError, Component, Parts};
use crate::kafka::KafkaConfig;
use crate::sink::kafka::KafkaPublisher;
use crate::source::kafka::{LagPoller, MetricsConsumer, Probe};

impl Component for KafkaConfig {
    fn describe(&self) -> String {
        let mut line = format!(
            "kafka {}: watching topics matching [{}] except [{}] and groups matching [{}] except [{}]; cluster label {}; alerts to topic {}; properties {:?}",
            self.bootstrap_servers,
            self.include_topics.join(", "),
            self.exclude_topics.join(", "),
            self.include_groups.join(", "),
            self.exclude_groups.join(", "),
            self.cluster,
            if self.alerts_topic.is_empty() { "(none)" } else { self.alerts_topic.as_str() },
            self.redacted_properties(),
        );
        if !self.metrics_topics.is_empty() {
            line += &format!(
                "; metric events from topics {}",
                self.metrics_topics.join(", ")
            );
        }
        if self.probe.enabled {
            line += &format!("; latency probe through topic {}", self.probe.topic);
        }
        line
    }

    fn build(&self) -> Result<Parts, BuildError> {
        let poller = LagPoller::new(self).map_err(|message| BuildError {
            component: format!("kafka {}", self.bootstrap_servers),
            message: message.to_string(),
        })?;
        let mut parts = Parts::default();
        parts.sources.push(Box::new(poller));
        if !self.metrics_topics.is_empty() {
            parts.sources.push(Box::new(MetricsConsumer::new(self)));
        }
        if self.probe.enabled {
            parts.sources.push(Box::new(Probe::new(self)));
        }
        if !self.alerts_topic.is_empty() {
            parts.sinks.push(super::spooled_sink(
                format!("kafka alert topic {}", self.alerts_topic),
                &self.bootstrap_servers,
                KafkaPublisher::new(self),
                self.spool_capacity,
            ));
        }
        Ok(parts)
    }
}
