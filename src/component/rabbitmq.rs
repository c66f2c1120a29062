//! A `[[rabbitmq]]` section: the queue poller, optionally the metric-queue consumer and the probe,
//! and the alert exchange behind its spool.

use super::{BuildError, Component, Parts};
use crate::rabbitmq::{redact, RabbitConfig};
use crate::sink::rabbitmq::RabbitPublisher;
use crate::source::rabbitmq::{MetricsConsumer, Probe, QueuePoller};

impl Component for RabbitConfig {
    fn describe(&self) -> String {
        let or = |v: &str, none: &str| {
            if v.is_empty() {
                none.to_string()
            } else {
                v.to_string()
            }
        };
        let mut line = format!(
            "rabbitmq {}: watching queues matching [{}] except [{}] in vhosts {} via {}; cluster label {}; alerts to exchange {}",
            redact(&self.uri),
            self.include.join(", "),
            self.exclude.join(", "),
            or(&self.vhosts.join(", "), "all"),
            if self.management_url.is_empty() {
                "passive declares".to_string()
            } else {
                format!("the management API {}", self.management_url)
            },
            or(&self.cluster, "from the management API (the cluster name)"),
            or(&self.alerts_exchange, "(none)"),
        );
        if !self.metrics_queue.is_empty() {
            line += &format!("; metric events from queue {}", self.metrics_queue);
        }
        if self.probe.enabled {
            line += &format!("; latency probe through queue {}", self.probe.queue);
        }
        line
    }

    fn build(&self) -> Result<Parts, BuildError> {
        let poller = QueuePoller::new(self).map_err(|message| BuildError {
            component: format!("rabbitmq {}", redact(&self.uri)),
            message: message.to_string(),
        })?;
        let mut parts = Parts::default();
        parts.sources.push(Box::new(poller));
        if !self.metrics_queue.is_empty() {
            parts.sources.push(Box::new(MetricsConsumer::new(self)));
        }
        if self.probe.enabled {
            parts.sources.push(Box::new(Probe::new(self)));
        }
        if !self.alerts_exchange.is_empty() {
            let publisher =
                RabbitPublisher::new(&self.uri, &self.alerts_exchange).with_tls(&self.tls);
            parts.sinks.push(super::spooled_sink(
                format!("rabbitmq alert exchange {}", self.alerts_exchange),
                &redact(&self.uri),
                publisher,
                self.spool_capacity,
            ));
        }
        Ok(parts)
    }
}
