//! `[[alertmanager]]` and `[[webhook]]` sections: alert sinks over HTTP, behind the spool.

use super::{BuildError, Component, Parts};
use crate::redact::redact_userinfo;
use crate::sink::http::{
    AlertmanagerConfig, AlertmanagerPublisher, AlertmanagerSink, WebhookConfig, WebhookPublisher,
};
use crate::sink::SpoolSink;

impl Component for WebhookConfig {
    fn describe(&self) -> String {
        format!("alerts to webhook {}", redact_userinfo(&self.url))
    }

    fn build(&self) -> Result<Parts, BuildError> {
        let name = format!("webhook {}", redact_userinfo(&self.url));
        let publisher = WebhookPublisher::new(&name, self);
        Ok(Parts {
            sources: Vec::new(),
            sinks: vec![super::spooled_sink(
                name,
                &redact_userinfo(&self.url),
                publisher,
                self.spool_capacity,
            )],
        })
    }
}

/// An Alertmanager sink also needs to know where mqwatch is reached, for its links back.
pub struct Alertmanager {
    pub config: AlertmanagerConfig,
    pub external_url: String,
}

impl Component for Alertmanager {
    fn describe(&self) -> String {
        format!(
            "alerts to Alertmanager {}, re-sent every {} while firing",
            redact_userinfo(&self.config.url),
            humantime::format_duration(self.config.resend_interval)
        )
    }

    fn build(&self) -> Result<Parts, BuildError> {
        let url = redact_userinfo(&self.config.url);
        let name = format!("alertmanager {url}");
        let publisher = AlertmanagerPublisher::new(&name, &self.config, &self.external_url);
        let link = crate::link::Link::new(format!("{name} ({url})"));
        let spool = SpoolSink::start(&name, link, publisher, self.config.spool_capacity);
        Ok(Parts {
            sources: Vec::new(),
            sinks: vec![Box::new(AlertmanagerSink::new(
                spool,
                self.config.resend_interval,
            ))],
        })
    }
}
