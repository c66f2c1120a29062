//! Alerts to a Kafka topic, keyed by entity so that one entity's updates stay in order, from an
//! idempotent producer with `acks=all`; an alert counts as sent once the broker acknowledged it.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::spool::Publisher;
use crate::alert::Alert;
use crate::kafka::{create_topic, redact_error, KafkaConfig};
use crate::link::BrokerError;

pub struct KafkaPublisher {
    cfg: KafkaConfig,
    producer: Option<FutureProducer>,
}

impl KafkaPublisher {
    pub fn new(cfg: &KafkaConfig) -> Self {
        KafkaPublisher {
            cfg: cfg.clone(),
            producer: None,
        }
    }
}

impl Publisher for KafkaPublisher {
    /// A fresh producer each time: after a broker restart an idempotent producer's state may be
    /// fatal to it. The alert topic is created if it does not exist.
    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.producer = None;
        create_topic(&self.cfg, &self.cfg.alerts_topic, 1).await?;
        // Fail a send within seconds rather than minutes: the spool retries it.
        let defaults = [("message.timeout.ms", "10000")];
        let own = [("enable.idempotence", "true"), ("acks", "all")];
        let producer = self.cfg.client_with_defaults(&defaults, &own).create();
        self.producer = Some(producer.map_err(|e| redact_error(e, &self.cfg))?);
        Ok(())
    }

    async fn publish(&mut self, alerts: &[Alert]) -> Result<(), BrokerError> {
        let producer = self.producer.as_ref().ok_or("not connected")?;
        let topic = self.cfg.alerts_topic.as_str();
        // Enqueue the whole batch, then wait for every delivery report.
        let mut reports = Vec::with_capacity(alerts.len());
        for a in alerts {
            let key = a.entity_key();
            let body = a.to_json();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "id",
                    value: Some(a.id.as_str()),
                })
                .insert(Header {
                    key: "kind",
                    value: Some(a.kind.as_str()),
                });
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&body)
                .headers(headers);
            reports.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| redact_error(e, &self.cfg))?,
            );
        }
        for r in reports {
            match r.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(redact_error(e, &self.cfg)),
                Err(_) => return Err("delivery report lost: producer closed".into()),
            }
        }
        Ok(())
    }
}
