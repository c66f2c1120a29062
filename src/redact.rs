//! Keeping secrets out of everything mqwatch prints: errors, logs, startup lines.
//!
//! Redaction must not depend on the input being well formed, so it works at three levels:
//! [`redact_userinfo`] hides the password of anything that looks like a URI (with or without a
//! scheme, with an unescaped `@` in the password); [`is_secret_property`] decides which
//! pass-through properties are shown as `***` (any name mentioning a password, secret, token or
//! key, and any name mqwatch does not know); and a [`Redactor`] holds the literal secrets read
//! leniently from a config file — even one that does not parse — and scrubs them from every log
//! line and error before it is written.

use std::sync::{Arc, RwLock};

pub const MASK: &str = "***";

/// Characters that end a URI-like token in free text.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')' | ',' | ';')
}

/// `text` with the password of every `user:password@host` (after an optional `scheme://`)
/// replaced by `***`. The password runs to the *last* `@` of the token, so an unescaped `@` in it
/// does not leave its tail behind.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        out.push_str(&redact_token(token));
        let delim_len = tail.chars().next().map_or(0, char::len_utf8);
        out.push_str(&tail[..delim_len]);
        rest = &tail[delim_len..];
    }
    out
}

fn redact_token(token: &str) -> String {
    let Some(at) = token.rfind('@') else {
        return token.to_string();
    };
    let start = token.find("://").map_or(0, |i| i + 3);
    if at < start {
        return token.to_string();
    }
    match token[start..at].find(':') {
        Some(colon) => format!("{}{MASK}{}", &token[..start + colon + 1], &token[at..]),
        None => token.to_string(),
    }
}

/// The password of a URI-like string, however malformed: what [`redact_userinfo`] would hide.
pub fn uri_password(uri: &str) -> Option<&str> {
    let at = uri.rfind('@')?;
    let start = uri.find("://").map_or(0, |i| i + 3);
    let userinfo = uri.get(start..at)?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// librdkafka properties known to carry no secret; their values may be logged.
const PLAIN_PROPERTIES: &[&str] = &[
    "acks",
    "api.version.request",
    "auto.offset.reset",
    "batch.num.messages",
    "broker.address.family",
    "broker.version.fallback",
    "client.id",
    "client.rack",
    "compression.codec",
    "compression.type",
    "debug",
    "enable.auto.commit",
    "enable.idempotence",
    "enable.ssl.certificate.verification",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "group.id",
    "isolation.level",
    "linger.ms",
    "log_level",
    "max.poll.interval.ms",
    "message.max.bytes",
    "message.timeout.ms",
    "metadata.max.age.ms",
    "queue.buffering.max.ms",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "request.timeout.ms",
    "retries",
    "retry.backoff.ms",
    "sasl.kerberos.principal",
    "sasl.kerberos.service.name",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.username",
    "security.protocol",
    "session.timeout.ms",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.timeout.ms",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.endpoint.identification.algorithm",
    "statistics.interval.ms",
    "topic.metadata.refresh.interval.ms",
];

/// librdkafka properties that carry secrets, for suggestions when a name is misspelled.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.key.location",
    "ssl.keystore.password",
    "ssl.keystore.location",
];

/// Whether a pass-through property's value must be hidden in logs: any name that mentions a
/// password, secret, token or key, and any name not known to be harmless.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"]
        .iter()
        .any(|w| n.contains(w))
        || !PLAIN_PROPERTIES.contains(&n.as_str())
}

/// The known librdkafka property nearest to a misspelled one.
pub fn nearest_property(name: &str) -> Option<&'static str> {
    nearest(
        name,
        PLAIN_PROPERTIES.iter().chain(SECRET_PROPERTIES).copied(),
    )
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|&(d, c)| d <= (c.len().max(name.len()) / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

/// The literal secrets of one run, scrubbed from everything written to the log.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn add(&self, secret: &str) {
        // Very short strings would blank out ordinary words; they are not worth guarding.
        if secret.len() >= 3 {
            let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
            if !s.iter().any(|x| x == secret) {
                s.push(secret.to_string());
                // Longest first, so a secret that contains another is replaced whole.
                s.sort_by_key(|x| std::cmp::Reverse(x.len()));
            }
        }
    }

    /// Reads the secrets of a config file line by line, without needing it to parse: the value
    /// of every key that names a password, secret, token or credential, of every pass-through
    /// property that [`is_secret_property`] hides, and the password of every URI-like value.
    pub fn add_from_config_text(&self, text: &str) {
        let pair = regex::Regex::new(
            r#"(?:"([^"]+)"|([A-Za-z0-9_.\-]+))[ \t]*=[ \t]*(?:"([^"]*)"?|'([^']*)'?)"#,
        )
        .expect("valid pattern");
        let mut in_properties = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_properties = line.trim_matches(['[', ']']).ends_with("properties");
                continue;
            }
            let inline_properties = line.starts_with("properties");
            for c in pair.captures_iter(line) {
                let key = c.get(1).or(c.get(2)).map_or("", |m| m.as_str());
                let value = c.get(3).or(c.get(4)).map_or("", |m| m.as_str());
                let lower = key.to_ascii_lowercase();
                let named_secret = ["password", "secret", "token", "credential"]
                    .iter()
                    .any(|w| lower.contains(w));
                let property = (in_properties || inline_properties) && key != "properties";
                if named_secret || (property && is_secret_property(key)) {
                    self.add(value);
                }
                if let Some(p) = uri_password(value) {
                    self.add(p);
                }
            }
        }
    }

    /// `text` with every known secret and every URI password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = redact_userinfo(text);
        for s in self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// A writer for the log that scrubs each line before it reaches stderr.
    pub fn stderr(&self) -> ScrubbingWriter {
        ScrubbingWriter {
            redactor: self.clone(),
        }
    }
}

/// Scrubs what it is given, then writes it to stderr (one log event per write).
pub struct ScrubbingWriter {
    redactor: Redactor,
}

impl std::io::Write for ScrubbingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.redactor.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redactor {
    type Writer = ScrubbingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.stderr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_passwords_are_hidden_however_the_uri_is_written() {
        assert_eq!(
            redact_userinfo("amqps://risk:s3cret@mq:5671/prod"),
            "amqps://risk:***@mq:5671/prod"
        );
        assert_eq!(
            redact_userinfo(
                "rabbitmq.uri guest:s3cretPW@127.0.0.1: Invalid URL: 'guest:s3cretPW@...'"
            ),
            "rabbitmq.uri guest:***@127.0.0.1: Invalid URL: 'guest:***@...'"
        );
        assert_eq!(
            redact_userinfo("amqp://guest:p@ssW0rd@127.0.0.1:5673/%2f"),
            "amqp://guest:***@127.0.0.1:5673/%2f"
        );
        assert_eq!(redact_userinfo("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(
            redact_userinfo("mail alice@example.com at 10:30"),
            "mail alice@example.com at 10:30"
        );
        assert_eq!(uri_password("x://u:p@ss@h"), Some("p@ss"));
        assert_eq!(uri_password("u:pw@h:1"), Some("pw"));
        assert_eq!(uri_password("amqp://h"), None);
    }

    #[test]
    fn secret_and_unknown_properties_are_hidden() {
        for name in [
            "sasl.password",
            "sasl.pasword",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "my.token",
            "frobnicate",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in ["sasl.username", "security.protocol", "acks"] {
            assert!(!is_secret_property(name), "{name}");
        }
        assert_eq!(nearest_property("sasl.pasword"), Some("sasl.password"));
        assert_eq!(nearest_property("zzzzzzzz"), None);
    }

    #[test]
    fn secrets_are_read_from_config_text_that_does_not_parse() {
        let r = Redactor::default();
        r.add_from_config_text(
            "[rabbitmq]\nuri = \"amqp://guest:hunter22@127.0.0.1/%2f\nmanagement_password = \"mgmt-pw\"\n\
             routing_key = \"mqwatch.probe\"\n[kafka]\nproperties = { \"sasl.pasword\" = \"kpass\" }\n\
             [kafka.properties]\n\"ssl.key.password\" = 'keypw'\n\"security.protocol\" = \"SASL_SSL\"",
        );
        let line = "uri amqp://x:hunter22@h failed; mgmt-pw kpass keypw mqwatch.probe SASL_SSL";
        assert_eq!(
            r.scrub(line),
            "uri amqp://x:***@h failed; *** *** *** mqwatch.probe SASL_SSL"
        );
    }
}
