//! RabbitMQ settings shared by the queue poller, the metric-queue consumer, the probe and the
//! alert sink, and the few helpers they share: connecting, and keeping credentials out of logs.

use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;
use crate::link::BrokerError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// AMQP URI (`amqp://` or `amqps://`); credentials in it are never logged.
    pub uri: String,
    /// Management HTTP API; empty disables the poller's HTTP path (AMQP fallback only).
    pub management_url: String,
    /// Management credentials; empty means those of the AMQP URI.
    pub management_user: String,
    pub management_password: String,
    /// The `cluster` label of everything from this broker; empty asks the management API.
    pub cluster: String,
    /// Vhosts to watch; empty means all.
    pub vhosts: Vec<String>,
    /// Queues (regular expressions on the queue name) to watch, and to leave out.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Queues polled by passive declares when the management API is unavailable.
    pub queues: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Consume metric events (the wire format) from this queue; empty disables.
    pub metrics_queue: String,
    /// Where refused metric messages go, with the error in the `x-mqwatch-error` header.
    pub dead_letter_exchange: String,
    /// Topic exchange alerts are published to; empty disables the sink.
    pub alerts_exchange: String,
    /// Alerts kept while the broker is unreachable; when full, the engine waits.
    pub spool_capacity: usize,
    pub probe: ProbeConfig,
    /// For `amqps://`: a private CA to trust, and a client certificate.
    pub tls: RabbitTls,
}

/// `[rabbitmq.tls]`: files read at each connection (so that rotated certificates are taken up).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitTls {
    /// PEM certificates to trust besides the system's (the CA of a private broker).
    pub ca_file: String,
    /// A PEM client certificate and its PKCS#8 key, for a broker that asks for one.
    pub cert_file: String,
    pub key_file: String,
}

impl RabbitTls {
    fn config(&self) -> Result<OwnedTLSConfig, BrokerError> {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| BrokerError::new(format!("rabbitmq.tls.{what} {path}: {e}")))
        };
        let mut tls = OwnedTLSConfig::default();
        if !self.ca_file.is_empty() {
            let pem = read("ca_file", &self.ca_file)?;
            tls.cert_chain = Some(String::from_utf8_lossy(&pem).into_owned());
        }
        if !self.cert_file.is_empty() {
            tls.identity = Some(OwnedIdentity::PKCS8 {
                pem: read("cert_file", &self.cert_file)?,
                key: read("key_file", &self.key_file)?,
            });
        }
        Ok(tls)
    }
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            uri: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            management_url: "http://127.0.0.1:15672".into(),
            management_user: String::new(),
            management_password: String::new(),
            cluster: String::new(),
            vhosts: Vec::new(),
            include: vec![".*".into()],
            exclude: vec!["^amq\\.".into(), "^mqwatch\\.".into()],
            queues: Vec::new(),
            poll_interval: Duration::from_secs(5),
            metrics_queue: String::new(),
            dead_letter_exchange: "mqwatch.dead-letter".into(),
            alerts_exchange: "mqwatch.alerts".into(),
            spool_capacity: 10_000,
            probe: ProbeConfig::default(),
            tls: RabbitTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub enabled: bool,
    /// Exchange the probe publishes through ("" is the default exchange) and the queue it reads.
    pub exchange: String,
    pub routing_key: String,
    pub queue: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: false,
            exchange: String::new(),
            routing_key: "mqwatch.probe".into(),
            queue: "mqwatch.probe".into(),
            interval: Duration::from_secs(1),
        }
    }
}

impl RabbitConfig {
    /// Management credentials: the configured ones, else those of the AMQP URI, else guest.
    pub fn management_credentials(&self) -> (String, String) {
        if !self.management_user.is_empty() {
            return (
                self.management_user.clone(),
                self.management_password.clone(),
            );
        }
        match self.uri.parse::<lapin::uri::AMQPUri>() {
            Ok(u) => (u.authority.userinfo.username, u.authority.userinfo.password),
            Err(_) => ("guest".into(), "guest".into()),
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.uri
            .parse::<lapin::uri::AMQPUri>()
            // Never quoted, nor what the parser quotes of it: a URI that does not parse may hold a
            // password its redaction cannot find (one without its `@`).
            .map_err(|e| {
                let why = e.to_string();
                let why = why.split(['\'', '"']).next().unwrap_or("");
                format!(
                    "rabbitmq.uri is not an AMQP URI: {}",
                    why.trim_end_matches([':', ' '])
                )
            })?;
        if !self.tls.cert_file.is_empty() && self.tls.key_file.is_empty() {
            return Err("rabbitmq.tls.cert_file needs rabbitmq.tls.key_file".into());
        }
        crate::invalid::check_patterns("rabbitmq.include", &self.include)?;
        crate::invalid::check_patterns("rabbitmq.exclude", &self.exclude)?;
        Ok(())
    }
}

/// The URI with any password replaced, fit for logs and errors, however malformed it is.
pub fn redact(uri: &str) -> String {
    crate::redact::redact_userinfo(uri)
}

/// Connects with a name that shows in the management UI (and lets tests find the connection).
pub async fn connect(uri: &str, name: &str) -> Result<Connection, BrokerError> {
    connect_with(uri, name, &RabbitTls::default()).await
}

/// As [`connect`], trusting and presenting the certificates `tls` names (for `amqps://`).
pub async fn connect_with(
    uri: &str,
    name: &str,
    tls: &RabbitTls,
) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let failed = |e| BrokerError::context(format!("cannot connect to {}", redact(uri)), e);
    DefaultConnectionBuilder::new()
        .map_err(failed)?
        .with_uri_str(uri.to_string())
        .with_properties(props)
        .with_tls_config(tls.config()?)
        .connect()
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("amqps://risk:s3cret@mq:5671/prod"),
            "amqps://risk:***@mq:5671/prod"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert!(!redact("http://u:p@x").contains(":p@"));
        assert_eq!(redact("guest:pw@127.0.0.1:"), "guest:***@127.0.0.1:");
    }

    #[test]
    fn management_credentials_default_to_the_uri() {
        let c = RabbitConfig {
            uri: "amqp://alice:pw@h:5672/%2f".into(),
            ..Default::default()
        };
        assert_eq!(c.management_credentials(), ("alice".into(), "pw".into()));
        assert!(c.validate().is_ok());
        let bad = RabbitConfig {
            include: vec!["(".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
