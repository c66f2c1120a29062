//! Alerts to a RabbitMQ topic exchange, routed by `<severity>.<kind>.<cluster>.<entity>`, so that
//! a risk team binds exactly what it wants (`critical.#`, `*.consumer_stall.#`). Messages are
//! persistent, carry the alert id as `message_id`, and count as sent only once confirmed. They are
//! published `mandatory`: an alert that no bound queue takes comes back, is counted
//! (`alerts_unroutable`), and the first one is logged — an exchange nobody listens to is worth knowing about, but is no reason
//! to hold alerts back, so a returned alert still counts as delivered.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

use super::spool::Publisher;
use crate::alert::Alert;
use crate::link::BrokerError;
use crate::rabbitmq::{connect_with, RabbitTls};
use crate::telemetry::emit;
use crate::telemetry::events::AlertUnroutable;

pub struct RabbitPublisher {
    uri: String,
    tls: RabbitTls,
    exchange: String,
    link: Option<(Connection, Channel)>,
    /// The sink's name in the log and the counters.
    sink_name: String,
}

impl RabbitPublisher {
    pub fn new(uri: &str, exchange: &str) -> Self {
        RabbitPublisher {
            uri: uri.into(),
            tls: RabbitTls::default(),
            exchange: exchange.into(),
            link: None,
            sink_name: format!("rabbitmq alert exchange {exchange}"),
        }
    }
}

impl RabbitPublisher {
    /// Connects with the certificates `tls` names (for `amqps://`).
    pub fn with_tls(mut self, tls: &RabbitTls) -> Self {
        self.tls = tls.clone();
        self
    }
}

/// `<severity>.<kind>.<cluster>.<entity>`: entity is the topic and group, or the queue.
pub fn routing_key(a: &Alert) -> String {
    let l = |k: &str| a.labels.get(k).map(String::as_str);
    let cluster = l("cluster").unwrap_or("default");
    let entity = match (l("topic"), l("consumergroup"), l("queue")) {
        (Some(t), Some(g), _) => format!("{t}.{g}"),
        (Some(t), None, _) => t.to_string(),
        (None, _, Some(q)) => q.to_string(),
        _ => l("__name__").unwrap_or("series").to_string(),
    };
    let sev = serde_json::to_value(a.severity)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    format!("{sev}.{}.{cluster}.{entity}", a.kind.as_str())
}

impl Publisher for RabbitPublisher {
    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.link = None;
        // The exchange in the name tells operators (and tests) which connection carries what.
        let name = format!("mqwatch-alerts {}", self.exchange);
        let conn = connect_with(&self.uri, &name, &self.tls).await?;
        let ch = conn.create_channel().await.map_err(BrokerError::new)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::new)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declare exchange {}: {e}", self.exchange))?;
        self.link = Some((conn, ch));
        Ok(())
    }

    async fn publish(&mut self, alerts: &[Alert]) -> Result<(), BrokerError> {
        let (_, ch) = self.link.as_ref().ok_or("not connected")?;
        let mut confirms = Vec::with_capacity(alerts.len());
        for a in alerts {
            let mut headers = FieldTable::default();
            headers.insert("kind".into(), AMQPValue::LongString(a.kind.as_str().into()));
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(a.id.as_str().into())
                .with_timestamp((a.ts / 1000).max(0) as u64)
                .with_headers(headers);
            let confirm = ch
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key(a).as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    a.to_json().as_bytes(),
                    props,
                )
                .await
                .map_err(BrokerError::new)?;
            confirms.push((confirm, a));
        }
        for (c, a) in confirms {
            match c.await.map_err(BrokerError::new)? {
                Confirmation::Nack(_) => return Err("broker refused (nack) an alert".into()),
                Confirmation::Ack(Some(_)) => {
                    emit(AlertUnroutable {
                        sink: &self.sink_name,
                        id: &a.id,
                        routing_key: &routing_key(a),
                    });
                }
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
            }
        }
        Ok(())
    }
}
