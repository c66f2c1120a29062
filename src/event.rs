//! The wire format of a metric event, parsed in one place.
//!
//! Every source (files, broker topics and queues, pollers) hands raw bytes to [`parse_event`] or
//! [`parse_events`] and gets back a borrowed [`RawEvent`] or a [`ParseError`] whose reason is
//! counted by [`ErrorReason`]. Parsing borrows from the input and keeps up to eight labels inline,
//! so the common case allocates nothing.
//!
//! A series is identified by its name and sorted labels ([`SeriesKey`]); which detectors watch it
//! follows from its [`Family`], derived from well-known metric names.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hasher;

use rustc_hash::FxHasher;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;

/// Timestamps outside [2000-01-01, 2100-01-01) are rejected as absurd (often seconds, not millis).
pub const MIN_TS_MS: i64 = 946_684_800_000;
pub const MAX_TS_MS: i64 = 4_102_444_800_000;

/// How a value is to be read: a level, a monotonically increasing total, or one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Gauge,
    Counter,
    Observation,
}

pub type LabelVec<'a> = SmallVec<[(Cow<'a, str>, Cow<'a, str>); 8]>;

/// One metric event as it arrives, borrowing from the input buffer. Labels are sorted by key.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent<'a> {
    pub ts: i64,
    pub name: Cow<'a, str>,
    pub labels: LabelVec<'a>,
    pub value: f64,
    pub kind: Option<MetricType>,
}

impl RawEvent<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Stable identity of the series: name and sorted labels.
    pub fn series_hash(&self) -> u64 {
        let mut h = FxHasher::default();
        h.write(self.name.as_bytes());
        for (k, v) in &self.labels {
            h.write_u8(0xff);
            h.write(k.as_bytes());
            h.write_u8(0xfe);
            h.write(v.as_bytes());
        }
        h.finish()
    }

    pub fn to_key(&self) -> SeriesKey {
        SeriesKey {
            name: self.name.as_ref().into(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.as_ref().into(), v.as_ref().into()))
                .collect(),
        }
    }
}

/// The wire form, written by the one serialiser that matches [`parse_event`]: `type` is omitted
/// when the family implies it, labels keep their order (sorted, once parsed).
impl serde::Serialize for RawEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct LabelMap<'l, 'a>(&'l LabelVec<'a>);
        impl serde::Serialize for LabelMap<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            }
        }
        let mut m = s.serialize_map(Some(4 + usize::from(self.kind.is_some())))?;
        m.serialize_entry("ts", &self.ts)?;
        m.serialize_entry("name", self.name.as_ref())?;
        m.serialize_entry("labels", &LabelMap(&self.labels))?;
        m.serialize_entry("value", &self.value)?;
        if let Some(kind) = self.kind {
            m.serialize_entry("type", &kind)?;
        }
        m.end()
    }
}

impl RawEvent<'_> {
    /// Appends the event as one JSON line, the form files and metric topics carry.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("writing JSON to memory cannot fail");
        out.push(b'\n');
    }
}

/// Owned identity of a series, kept once per series by the worker that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct SeriesKey {
    pub name: Box<str>,
    pub labels: Vec<(Box<str>, Box<str>)>,
}

impl SeriesKey {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name)?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"{v}\"")?;
        }
        f.write_str("}")
    }
}

/// The well-known metric names, spelled once: sources emit them, [`Family::of`] recognises them.
pub mod names {
    pub const KAFKA_LOG_END_OFFSET: &str = "kafka_topic_partition_current_offset";
    pub const KAFKA_COMMITTED_OFFSET: &str = "kafka_consumergroup_current_offset";
    pub const KAFKA_LAG: &str = "kafka_consumergroup_lag";
    pub const KAFKA_LAG_SECONDS: &str = "kafka_consumergroup_lag_seconds";
    pub const KAFKA_MEMBERS: &str = "kafka_consumergroup_members";
    pub const RABBIT_READY: &str = "rabbitmq_queue_messages_ready";
    pub const RABBIT_UNACKED: &str = "rabbitmq_queue_messages_unacked";
    pub const RABBIT_CONSUMERS: &str = "rabbitmq_queue_consumers";
    pub const RABBIT_PUBLISHED: &str = "rabbitmq_queue_messages_published_total";
    pub const RABBIT_DELIVERED: &str = "rabbitmq_queue_messages_delivered_total";
    pub const RABBIT_ACKED: &str = "rabbitmq_queue_messages_acked_total";
    pub const RABBIT_REDELIVERED: &str = "rabbitmq_queue_messages_redelivered_total";
    pub const RABBIT_UTILISATION: &str = "rabbitmq_queue_consumer_utilisation";
    pub const LATENCY: &str = "message_latency_ms";
}

/// What a series means to the engine, from its well-known name (the Prometheus exporters' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    KafkaLogEndOffset,
    KafkaCommittedOffset,
    KafkaLag,
    KafkaLagSeconds,
    KafkaMembers,
    RabbitReady,
    RabbitUnacked,
    RabbitConsumers,
    RabbitPublished,
    RabbitDelivered,
    RabbitAcked,
    RabbitRedelivered,
    RabbitUtilisation,
    Latency,
    Generic,
}

impl Family {
    pub fn of(name: &str) -> Family {
        match name {
            names::KAFKA_LOG_END_OFFSET => Family::KafkaLogEndOffset,
            names::KAFKA_COMMITTED_OFFSET => Family::KafkaCommittedOffset,
            names::KAFKA_LAG => Family::KafkaLag,
            names::KAFKA_LAG_SECONDS => Family::KafkaLagSeconds,
            names::KAFKA_MEMBERS => Family::KafkaMembers,
            names::RABBIT_READY => Family::RabbitReady,
            names::RABBIT_UNACKED => Family::RabbitUnacked,
            names::RABBIT_CONSUMERS => Family::RabbitConsumers,
            names::RABBIT_PUBLISHED => Family::RabbitPublished,
            names::RABBIT_DELIVERED => Family::RabbitDelivered,
            names::RABBIT_ACKED => Family::RabbitAcked,
            names::RABBIT_REDELIVERED => Family::RabbitRedelivered,
            names::RABBIT_UTILISATION => Family::RabbitUtilisation,
            names::LATENCY => Family::Latency,
            _ => Family::Generic,
        }
    }

    /// The well-known name of a family (empty for generic gauges, which keep their own).
    pub fn name(self) -> &'static str {
        use Family::*;
        match self {
            KafkaLogEndOffset => names::KAFKA_LOG_END_OFFSET,
            KafkaCommittedOffset => names::KAFKA_COMMITTED_OFFSET,
            KafkaLag => names::KAFKA_LAG,
            KafkaLagSeconds => names::KAFKA_LAG_SECONDS,
            KafkaMembers => names::KAFKA_MEMBERS,
            RabbitReady => names::RABBIT_READY,
            RabbitUnacked => names::RABBIT_UNACKED,
            RabbitConsumers => names::RABBIT_CONSUMERS,
            RabbitPublished => names::RABBIT_PUBLISHED,
            RabbitDelivered => names::RABBIT_DELIVERED,
            RabbitAcked => names::RABBIT_ACKED,
            RabbitRedelivered => names::RABBIT_REDELIVERED,
            RabbitUtilisation => names::RABBIT_UTILISATION,
            Latency => names::LATENCY,
            Generic => "",
        }
    }

    /// The type a well-known name implies; generic series are gauges unless they say otherwise.
    pub fn implied_type(self) -> MetricType {
        use Family::*;
        match self {
            KafkaLogEndOffset | KafkaCommittedOffset | RabbitPublished | RabbitDelivered
            | RabbitAcked | RabbitRedelivered => MetricType::Counter,
            Latency => MetricType::Observation,
            _ => MetricType::Gauge,
        }
    }

    /// Labels a well-known family cannot do without.
    pub fn required_labels(self) -> &'static [&'static str] {
        use Family::*;
        match self {
            KafkaLogEndOffset => &["topic", "partition"],
            KafkaCommittedOffset | KafkaLag | KafkaLagSeconds => {
                &["topic", "consumergroup", "partition"]
            }
            KafkaMembers => &["topic", "consumergroup"],
            RabbitReady | RabbitUnacked | RabbitConsumers | RabbitPublished | RabbitDelivered
            | RabbitAcked | RabbitRedelivered | RabbitUtilisation => &["queue"],
            Latency | Generic => &[],
        }
    }
}

/// Why an input was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReason {
    NotJson,
    MissingField,
    BadField,
    NonFinite,
    NegativeLatency,
    AbsurdTimestamp,
    MissingLabel,
    TypeConflict,
    Late,
    /// A new series beyond the source's `engine.max_series`.
    SeriesLimit,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 10] = [
        ErrorReason::NotJson,
        ErrorReason::MissingField,
        ErrorReason::BadField,
        ErrorReason::NonFinite,
        ErrorReason::NegativeLatency,
        ErrorReason::AbsurdTimestamp,
        ErrorReason::MissingLabel,
        ErrorReason::TypeConflict,
        ErrorReason::Late,
        ErrorReason::SeriesLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::NotJson => "not_json",
            ErrorReason::MissingField => "missing_field",
            ErrorReason::BadField => "bad_field",
            ErrorReason::NonFinite => "non_finite",
            ErrorReason::NegativeLatency => "negative_latency",
            ErrorReason::AbsurdTimestamp => "absurd_timestamp",
            ErrorReason::MissingLabel => "missing_label",
            ErrorReason::TypeConflict => "type_conflict",
            ErrorReason::Late => "late",
            ErrorReason::SeriesLimit => "series_limit",
        }
    }
}

/// A refused input: the reason (counted) and a message naming the field or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ParseError {
    pub reason: ErrorReason,
    pub detail: String,
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ParseError {
    pub fn new(reason: ErrorReason, detail: impl Into<String>) -> Self {
        ParseError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Where an input came from: a file and line, or a broker topic/queue and offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub source: String,
    pub position: String,
}

/// A parse error with its location, as reported to the user and to dead-letter sinks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{}: {error}", location.source, location.position)]
pub struct InputError {
    pub location: Location,
    pub error: ParseError,
}

/// Parses one JSON object. See [`parse_events`] for a payload that may also be an array.
pub fn parse_event(text: &str) -> Result<RawEvent<'_>, ParseError> {
    let wire: WireEvent<'_> = serde_json::from_str(text).map_err(classify_json_error)?;
    validate(wire)
}

/// Parses one payload (a line or a message): a JSON object or an array of them. Each element is
/// passed to `each`; a payload that is not JSON at all yields a single error.
pub fn parse_events<'a>(text: &'a str, mut each: impl FnMut(Result<RawEvent<'a>, ParseError>)) {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        each(parse_event(text));
        return;
    }
    match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(trimmed) {
        Ok(items) => items
            .into_iter()
            .for_each(|raw| each(parse_event(raw.get()))),
        Err(e) => each(Err(classify_json_error(e))),
    }
}

fn classify_json_error(e: serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    let msg = e.to_string();
    let reason = match e.classify() {
        _ if msg.starts_with("number out of range") => ErrorReason::NonFinite,
        Category::Syntax | Category::Eof | Category::Io => ErrorReason::NotJson,
        Category::Data if msg.starts_with("missing field") => ErrorReason::MissingField,
        Category::Data if msg.contains("absurd timestamp") => ErrorReason::AbsurdTimestamp,
        Category::Data => ErrorReason::BadField,
    };
    ParseError::new(reason, msg)
}

fn validate(wire: WireEvent<'_>) -> Result<RawEvent<'_>, ParseError> {
    let WireEvent {
        ts,
        name,
        labels,
        value,
        kind,
    } = wire;
    let Labels(mut labels) = labels.unwrap_or_default();
    if !value.is_finite() {
        return Err(ParseError::new(
            ErrorReason::NonFinite,
            format!("value {value} is not finite"),
        ));
    }
    if name.is_empty() {
        return Err(ParseError::new(ErrorReason::BadField, "name is empty"));
    }
    let family = Family::of(&name);
    if let Some(t) = kind {
        if family != Family::Generic && t != family.implied_type() {
            return Err(ParseError::new(
                ErrorReason::TypeConflict,
                format!("{name} is a {:?}, not a {t:?}", family.implied_type()),
            ));
        }
    }
    if family == Family::Latency && value < 0.0 {
        return Err(ParseError::new(
            ErrorReason::NegativeLatency,
            format!("{name} value {value} is negative"),
        ));
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for req in family.required_labels() {
        if !labels.iter().any(|(k, _)| k == req) {
            return Err(ParseError::new(
                ErrorReason::MissingLabel,
                format!("{name} needs label `{req}`"),
            ));
        }
    }
    Ok(RawEvent {
        ts: ts.0,
        name,
        labels,
        value,
        kind,
    })
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    ts: Ts,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    labels: Option<Labels<'a>>,
    value: f64,
    #[serde(rename = "type", default)]
    kind: Option<MetricType>,
}

/// Event time in Unix milliseconds, from an integer or an RFC 3339 string.
struct Ts(i64);

impl<'de> Deserialize<'de> for Ts {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TsVisitor)
    }
}

struct TsVisitor;

#[inline]
fn checked_ts<E: de::Error>(ms: i64) -> Result<Ts, E> {
    if (MIN_TS_MS..MAX_TS_MS).contains(&ms) {
        Ok(Ts(ms))
    } else {
        Err(E::custom(format_args!(
            "absurd timestamp {ms}: `ts` must be Unix milliseconds between 2000 and 2100"
        )))
    }
}

impl Visitor<'_> for TsVisitor {
    type Value = Ts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`ts` as integer Unix milliseconds or an RFC 3339 string")
    }
    #[inline]
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
        checked_ts(v)
    }
    #[inline]
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
        checked_ts(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
        if v.fract() != 0.0 || !v.is_finite() {
            return Err(E::custom(format_args!(
                "`ts` {v} is not whole milliseconds"
            )));
        }
        checked_ts(v as i64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
        let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map_err(|e| E::custom(format_args!("`ts` {v:?} is not RFC 3339: {e}")))?;
        checked_ts((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// Labels as a string→string map, kept inline for up to eight pairs.
#[derive(Default)]
struct Labels<'a>(LabelVec<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`labels` as an object of string values")
            }
            #[inline]
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Labels<'a>, M::Error> {
                let mut out = LabelVec::new();
                while let Some(k) = m.next_key::<CowStr<'a>>()? {
                    let v: CowStr<'a> = m.next_value()?;
                    out.push((k.0, v.0));
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input unless it had escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string label value")
            }
            #[inline]
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: &str = r#"{"ts": 1767225600000, "name": "kafka_consumergroup_lag",
        "labels": {"topic": "payments.authorize", "cluster": "pay-kafka", "consumergroup": "auth-service", "partition": "3"},
        "value": 1532}"#;

    #[test]
    fn what_is_written_parses_back_to_the_same_event_even_with_quotes_in_labels() {
        let mut line = Vec::new();
        let mut e = parse_event(LAG).unwrap();
        e.labels.push(("zone".into(), "say \"hi\"\\n".into()));
        e.kind = Some(MetricType::Gauge);
        e.write_line(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(parse_event(text.trim_end()).unwrap(), e);
    }

    #[test]
    fn parses_the_documented_example_with_sorted_labels() {
        let e = parse_event(LAG).unwrap();
        assert_eq!(e.ts, 1_767_225_600_000);
        assert_eq!(e.value, 1532.0);
        let keys: Vec<&str> = e.labels.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["cluster", "consumergroup", "partition", "topic"]);
        assert!(
            matches!(e.labels[0].1, Cow::Borrowed(_)),
            "labels borrow from the input"
        );
    }

    #[test]
    fn series_identity_ignores_label_order() {
        let a =
            parse_event(r#"{"ts":1767225600000,"name":"x","labels":{"a":"1","b":"2"},"value":1}"#);
        let b =
            parse_event(r#"{"ts":1767225700000,"name":"x","labels":{"b":"2","a":"1"},"value":5}"#);
        assert_eq!(a.unwrap().series_hash(), b.unwrap().series_hash());
        let c =
            parse_event(r#"{"ts":1767225600000,"name":"x","labels":{"a":"2","b":"1"},"value":1}"#);
        assert_ne!(
            c.unwrap().series_hash(),
            parse_event(LAG).unwrap().series_hash()
        );
    }

    #[test]
    fn accepts_rfc3339_timestamps() {
        let e = parse_event(r#"{"ts":"2026-01-01T00:00:00Z","name":"g","value":1.5}"#).unwrap();
        assert_eq!(e.ts, 1_767_225_600_000);
        assert!(e.labels.is_empty());
    }

    fn reason(text: &str) -> ErrorReason {
        parse_event(text).unwrap_err().reason
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(reason("not json"), ErrorReason::NotJson);
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"x""#),
            ErrorReason::NotJson
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"value":1}"#),
            ErrorReason::MissingField
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"x","value":"NaN"}"#),
            ErrorReason::BadField
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"x","value":1e999}"#),
            ErrorReason::NonFinite
        );
        assert_eq!(
            reason(r#"{"ts":1767225600,"name":"x","value":1}"#),
            ErrorReason::AbsurdTimestamp
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"message_latency_ms","value":-3}"#),
            ErrorReason::NegativeLatency
        );
        assert_eq!(
            reason(
                r#"{"ts":1767225600000,"name":"kafka_consumergroup_lag","labels":{"topic":"t"},"value":3}"#
            ),
            ErrorReason::MissingLabel
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"message_latency_ms","type":"gauge","value":3}"#),
            ErrorReason::TypeConflict
        );
        assert_eq!(
            reason(r#"{"ts":1767225600000,"name":"x","labels":{"a":1},"value":1}"#),
            ErrorReason::BadField
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_event(r#"{"ts":1767225600000,"value":1}"#).unwrap_err();
        assert!(e.detail.contains("name"), "{e}");
        let e = parse_event(r#"{"ts":"yesterday","name":"x","value":1}"#).unwrap_err();
        assert!(e.detail.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn accepts_arrays_of_events() {
        let mut ok = 0;
        let mut bad = 0;
        parse_events(
            r#"[{"ts":1767225600000,"name":"a","value":1},{"ts":1,"name":"b","value":2}]"#,
            |r| if r.is_ok() { ok += 1 } else { bad += 1 },
        );
        assert_eq!((ok, bad), (1, 1));
    }

    #[test]
    fn families_follow_exporter_names() {
        assert_eq!(
            Family::of("kafka_consumergroup_current_offset").implied_type(),
            MetricType::Counter
        );
        assert_eq!(
            Family::of("message_latency_ms").implied_type(),
            MetricType::Observation
        );
        assert_eq!(Family::of("cpu").implied_type(), MetricType::Gauge);
    }

    #[test]
    fn every_well_known_name_is_spelled_once_and_maps_back_to_its_family() {
        use Family::*;
        for f in [
            KafkaLogEndOffset,
            KafkaCommittedOffset,
            KafkaLag,
            KafkaLagSeconds,
            KafkaMembers,
            RabbitReady,
            RabbitUnacked,
            RabbitConsumers,
            RabbitPublished,
            RabbitDelivered,
            RabbitAcked,
            RabbitRedelivered,
            RabbitUtilisation,
            Latency,
        ] {
            assert_eq!(Family::of(f.name()), f, "{}", f.name());
        }
        assert_eq!(Family::of("queue_depth"), Generic);
    }
}
