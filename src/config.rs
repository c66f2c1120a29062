//! TOML configuration: every setting has a default, so no file is needed at all.
//!
//! `[engine]` shapes the pipeline; `[latency]`, `[backlog]`, `[stall]`, `[level]`, `[learned]` and
//! `[alerts]` tune the detectors. Any detector setting can be overridden per entity by `[[override]]` tables
//! whose `match` names labels (`topic`, `consumergroup`, `queue`, `cluster`, ...):
//!
//! ```toml
//! [[override]]
//! match = { topic = "payments.settle" }
//! backlog = { min_backlog_seconds = 300 }
//! ```
//!
//! Overrides are resolved once, when an entity is first seen, never on the hot path.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub engine: EngineConfig,
    #[serde(flatten)]
    pub detectors: DetectorConfig,
    #[serde(rename = "override")]
    pub overrides: Vec<Override>,
    /// RabbitMQ brokers to watch and publish alerts to (live mode, `mqwatch run`): `[[rabbitmq]]`
    /// once per broker, or one `[rabbitmq]` table.
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rabbitmq: Vec<crate::rabbitmq::RabbitConfig>,
    /// Kafka clusters to watch and publish alerts to: `[[kafka]]` once per cluster, or one `[kafka]`.
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kafka: Vec<crate::kafka::KafkaConfig>,
    /// Alerts to Alertmanagers (`[[alertmanager]]`, or one `[alertmanager]`).
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub alertmanager: Vec<AlertmanagerConfig>,
    /// Alerts as JSON POSTs (`[[webhook]]`, or one `[webhook]`).
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub webhook: Vec<WebhookConfig>,
    /// Alerts on stdout (JSONL) in live mode.
    pub stdout: bool,
    /// The operations surface of a live run: HTTP API, Prometheus metrics, dashboard.
    pub http: HttpConfig,
    /// Maintenance windows: `[[silence]]` tables, alerts they match are not delivered.
    #[serde(rename = "silence", skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<WindowConfig>,
    /// Durable state of a live run: checkpoints and the journal of accepted alerts.
    pub state: StateConfig,
    /// Engines that share the watch as one Kafka consumer group (`crate::scale_out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_out: Option<crate::scale_out::ScaleOutConfig>,
}

/// `[state]`: what a live run keeps on disk so that a restart, or a crash, leaves no blind spot:
/// a checkpoint of every entity (baselines, learned cadences, open episodes) and the journal of
/// alerts accepted but not yet confirmed by every sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Where the checkpoint log and the alert journal live; "" keeps nothing, and a restart starts
    /// cold.
    pub dir: String,
    /// How often every entity is checkpointed, besides at shutdown and right after any interval
    /// that raised an alert.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: "mqwatch-state".into(),
            checkpoint_interval: Duration::from_secs(30),
        }
    }
}

/// `[http]`: where `mqwatch run` serves its API, `/metrics` and dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; port 0 takes a free port (the log says which); "" serves nothing.
    pub listen: String,
    /// Bearer token the write endpoints (silences) require; "" takes `MQWATCH_API_TOKEN` from the
    /// environment, and with neither, writes are refused. Never logged.
    pub token: String,
    /// Where mqwatch is reached from outside, for links in alerts (Alertmanager's
    /// `generatorURL`); "" = `http://` + the listen address.
    pub external_url: String,
    /// Where silences made through the API are kept across restarts; "" keeps them in memory.
    pub silences_file: String,
}

/// `[[webhook]]`: every alert update as a JSON POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Bearer …" }` (values never logged).
    pub headers: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub spool_capacity: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            spool_capacity: 10_000,
        }
    }
}

/// `[[alertmanager]]`: alerts to an Alertmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Its base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// How often open alerts are sent again; each firing send is valid for four of these.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub spool_capacity: usize,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            url: "http://127.0.0.1:9093".into(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            spool_capacity: 10_000,
        }
    }
}

/// `[[silence]]` in the config: a maintenance window that recurs every day, or on the given
/// weekdays, from `from` to `to` (UTC, `HH:MM`; a window may run past midnight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Labels that must be equal, e.g. `{ topic = "payments.settle" }`.
    #[serde(rename = "match", default)]
    pub equal: BTreeMap<String, String>,
    /// Labels that must match a regex (anchored), e.g. `{ queue = "ledger\\..*" }`.
    #[serde(default)]
    pub match_regex: BTreeMap<String, String>,
    pub from: String,
    pub to: String,
    /// `mon` … `sun`; empty = every day.
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default)]
    pub comment: String,
}

/// When a window is open: minutes of the day (UTC) and a bit per weekday, Monday first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub from_min: u32,
    pub to_min: u32,
    pub days: u8,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minute_of_day(field: &str, text: &str) -> Result<u32, String> {
    let bad = || format!("{field} is not a time of day (HH:MM, UTC)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl WindowConfig {
    /// Its times and days, checked; the matchers are checked when the window is built.
    pub fn schedule(&self) -> Result<Schedule, String> {
        let from_min = minute_of_day("from", &self.from)?;
        let to_min = minute_of_day("to", &self.to)?;
        if from_min == to_min {
            return Err("from and to are the same time: an empty window".into());
        }
        let mut days = 0u8;
        for (n, d) in self.days.iter().enumerate() {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("days[{n}] is not one of {DAYS:?}"))?;
            days |= 1 << i;
        }
        if self.equal.is_empty() && self.match_regex.is_empty() {
            return Err("a window needs `match` or `match_regex` (a window over everything is a mute button)".into());
        }
        for (k, v) in &self.match_regex {
            anchored_regex(v).map_err(|e| {
                format!(
                    "match_regex.{k} is not a regular expression: {}",
                    crate::invalid::regex_reason(&e)
                )
            })?;
        }
        Ok(Schedule {
            from_min,
            to_min,
            days: if days == 0 { 0x7f } else { days },
        })
    }
}

/// A label regex as Alertmanager reads one: it must match the whole value. The regex crate
/// matches in time linear in the value, so no pattern can stall the delivery of alerts; the size
/// of what a pattern compiles to is bounded too (patterns come from the API).
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
}

impl HttpConfig {
    /// Where mqwatch is reached from outside: `external_url`, else the listen address.
    pub fn external_base(&self) -> String {
        if self.external_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.external_url.trim_end_matches('/').to_string()
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            token: String::new(),
            external_url: String::new(),
            silences_file: "mqwatch-silences.json".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engine: EngineConfig::default(),
            detectors: DetectorConfig::default(),
            overrides: Vec::new(),
            rabbitmq: Vec::new(),
            kafka: Vec::new(),
            alertmanager: Vec::new(),
            webhook: Vec::new(),
            stdout: true,
            http: HttpConfig::default(),
            silences: Vec::new(),
            state: StateConfig::default(),
            scale_out: None,
        }
    }
}

/// A section given once as a table (`[kafka]`) or many times as an array of tables (`[[kafka]]`).
/// A visitor that hands the table or the array straight on, rather than an untagged enum, keeps
/// the inner error (an unknown key and its valid names, the line) intact.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    struct OneOrMany<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table or an array of tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(|t| vec![t])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(OneOrMany(std::marker::PhantomData))
}

/// What to do when a worker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backpressure {
    /// The source waits: nothing is lost, the source falls behind (files, broker consumers).
    Block,
    /// The batch is dropped and counted (`dropped_backpressure`): for pollers that must stay live.
    Drop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Length of one event-time interval: detectors judge each series once per interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How late an event may arrive and still count; later ones are counted as `late` and dropped.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Worker threads; 0 means one per core less one for parsing (at least one).
    pub workers: usize,
    /// Batches that may wait in each worker's queue.
    pub queue_batches: usize,
    /// Events per batch handed to a worker.
    pub batch_size: usize,
    pub backpressure: Backpressure,
    /// Distinct series one source may bring (a runaway label must not take the machine down):
    /// events of series beyond are refused and counted (`series_limit`), and the first one is
    /// logged. A series costs about 1.5 KiB as a partition's lag, 6 KiB as a generic gauge and
    /// 30 KiB as a latency stream.
    pub max_series: usize,
    /// Live mode: how long the brokers have to answer at startup; if none has by then, the run
    /// fails (exit 1) naming each broker and its last error.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// On Ctrl-C or SIGTERM, how long the sinks may keep trying to deliver waiting alerts; those
    /// still undelivered then are reported by id. A second Ctrl-C exits at once.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            interval: Duration::from_secs(10),
            lateness: Duration::from_secs(5),
            workers: 0,
            queue_batches: 64,
            batch_size: 1024,
            backpressure: Backpressure::Block,
            max_series: 100_000,
            startup_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    pub fn interval_ms(&self) -> i64 {
        self.interval.as_millis() as i64
    }
    pub fn lateness_ms(&self) -> i64 {
        self.lateness.as_millis() as i64
    }
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.saturating_sub(1).max(1)
    }
}

/// Detector settings: the part of the config that overrides may change per entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    pub latency: LatencyConfig,
    pub backlog: BacklogConfig,
    pub stall: StallConfig,
    pub level: LevelConfig,
    pub learned: LearnedConfig,
    pub alerts: AlertConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Interval histograms kept in the rolling window (window = intervals x interval).
    pub window_intervals: usize,
    /// HDR histogram precision (1 to 5 significant decimal digits).
    pub significant_digits: u8,
    /// Intervals of per-interval quantiles kept as the baseline's history.
    pub history_intervals: usize,
    /// Intervals of history needed before judging.
    pub warmup_intervals: usize,
    /// Robust z-score (median/MAD of log latency) that counts an interval as abnormal.
    pub z_threshold: f64,
    /// Observed/expected ratio below which nothing fires, however unusual.
    pub min_ratio: f64,
    /// Consecutive abnormal intervals needed to fire (single outliers never fire).
    pub persistence: usize,
    /// Consecutive abnormal intervals that fire even when they rise no higher than the stream's
    /// usual short bumps (a rebalance's half minute of doubled latency is a bump).
    pub long_persistence: usize,
    /// CUSUM slack and threshold (in z units) for slow drifts.
    pub drift_slack: f64,
    pub drift_threshold: f64,
    /// Ratio at which a latency alert is critical.
    pub critical_ratio: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            window_intervals: 6,
            significant_digits: 2,
            history_intervals: 360,
            warmup_intervals: 30,
            z_threshold: 4.0,
            min_ratio: 1.5,
            persistence: 3,
            long_persistence: 9,
            drift_slack: 1.5,
            drift_threshold: 25.0,
            critical_ratio: 4.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacklogConfig {
    /// How long the backlog must keep growing before it fires.
    #[serde(with = "humantime_serde")]
    pub growth_window: Duration,
    /// Share of the window's intervals in which the backlog must have grown.
    pub growth_share: f64,
    /// Backlog, in seconds of consumption, below which nothing fires.
    pub min_backlog_seconds: f64,
    /// Backlog, in seconds of consumption, at which the alert is critical.
    pub critical_backlog_seconds: f64,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        BacklogConfig {
            growth_window: Duration::from_secs(240),
            growth_share: 0.7,
            min_backlog_seconds: 60.0,
            critical_backlog_seconds: 600.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// A partition whose committed offset has not moved for this long while it has lag, and while
    /// the rest of its group has not moved either (as in a rebalance), is stalled. Only the time
    /// seen frozen counts: a rebalance looks just like it for a while.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// The same for a partition frozen alone while another partition of its group commits: its
    /// consumer is stuck, and no rebalance explains it. Counted, like `no_members_after`,
    /// `no_consumers_after` and `no_acks_after`, from halfway into the scrape gap it began in.
    #[serde(with = "humantime_serde")]
    pub partition_stall_after: Duration,
    /// The same, when group membership changed during the freeze (a rebalance takes its time).
    #[serde(with = "humantime_serde")]
    pub stall_after_rebalance: Duration,
    /// A group with zero members and lag for this long is stopped (a group of one consumer:
    /// `stall_after`, seen empty that long, since its restarts empty it too).
    ///
    /// This and the two below count from halfway into the scrape gap in which the state began
    /// (when two samples or more show it): scraped every 15 s, a queue left without consumers is
    /// seen so at the second scrape, not the third.
    #[serde(with = "humantime_serde")]
    pub no_members_after: Duration,
    /// A RabbitMQ queue with ready messages and no consumers for this long is stalled.
    #[serde(with = "humantime_serde")]
    pub no_consumers_after: Duration,
    /// A RabbitMQ queue with unacked messages, no acks and growing ready for this long is stalled.
    #[serde(with = "humantime_serde")]
    pub no_acks_after: Duration,
    /// A stall that lasts this long is critical.
    #[serde(with = "humantime_serde")]
    pub critical_after: Duration,
    /// Each partition (and queue) learns how long it usually stays frozen before it moves — its
    /// commit or ack cadence — and a freeze counts as a stall only past this many times that, when
    /// it is longer than the limits above: a sink that commits every 60 s is not stalled at 45 s.
    pub cadence_factor: f64,
    /// The freeze limit of a partition whose cadence is not learned yet (fewer than three freezes
    /// seen since start): the first minutes of watching a slow committer are not a stall. (A
    /// queue's acks keep `no_acks_after` until their cadence is learned.)
    #[serde(with = "humantime_serde")]
    pub stall_after_unlearned: Duration,
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            stall_after: Duration::from_secs(45),
            partition_stall_after: Duration::from_secs(20),
            stall_after_rebalance: Duration::from_secs(120),
            no_members_after: Duration::from_secs(20),
            no_consumers_after: Duration::from_secs(15),
            no_acks_after: Duration::from_secs(20),
            critical_after: Duration::from_secs(300),
            cadence_factor: 1.5,
            stall_after_unlearned: Duration::from_secs(180),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelConfig {
    /// Intervals of history behind the generic gauges' robust baseline.
    pub history_intervals: usize,
    pub warmup_intervals: usize,
    pub z_threshold: f64,
    pub persistence: usize,
    /// The *surprise* path (0 turns it off): each interval's surprise is its level z plus the z of
    /// its jump from the previous interval; when the mean surprise of the last
    /// `surprise_intervals` stands this many standard deviations above the series' long-run
    /// surprise, it fires once. It adapts to each series' own noise, so one setting fits many.
    pub surprise_intervals: usize,
    pub surprise_z_threshold: f64,
}

impl Default for LevelConfig {
    fn default() -> Self {
        LevelConfig {
            history_intervals: 360,
            warmup_intervals: 30,
            z_threshold: 6.0,
            persistence: 2,
            surprise_intervals: 0,
            surprise_z_threshold: 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnedConfig {
    /// Where a learned model is loaded, a latency or backlog finding fires only if the model found
    /// one of the entity's intervals abnormal within this window (stall findings always fire).
    #[serde(with = "humantime_serde")]
    pub confirm_window: Duration,
    /// A finding the model does not confirm is held back at most this long, then fires anyway:
    /// a model may delay what it sees no evidence of, never silence it.
    #[serde(with = "humantime_serde")]
    pub hold_at_most: Duration,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            confirm_window: Duration::from_secs(120),
            hold_at_most: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Consecutive clean intervals before a firing alert resolves.
    pub resolve_after_intervals: usize,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            resolve_after_intervals: 6,
        }
    }
}

/// Detector settings for the entities whose labels include all of `match`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Override {
    #[serde(rename = "match")]
    pub matches: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub settings: toml::Table,
}

pub use crate::invalid::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Invalid { path: String, source: Invalid },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Config::parse(&text).map_err(|source| ConfigError::Invalid { path: p, source })
    }

    /// Parses and validates a config, its `${env:…}` and `${file:…}` references expanded
    /// ([`expand_references`]). Errors are one line that names the line, the key and the nearest
    /// valid name, and never echo the config's text (a line may carry a password).
    pub fn parse(text: &str) -> Result<Config, Invalid> {
        let (expanded, _) = expand_references(text)?;
        Config::parse_expanded(&expanded)
    }

    /// As [`parse`](Config::parse), for a text whose references are expanded already.
    pub fn parse_expanded(text: &str) -> Result<Config, Invalid> {
        const SECTIONS: [&str; 17] = [
            "engine",
            "latency",
            "backlog",
            "stall",
            "level",
            "learned",
            "alerts",
            "override",
            "rabbitmq",
            "kafka",
            "alertmanager",
            "webhook",
            "stdout",
            "http",
            "silence",
            "state",
            "scale_out",
        ];
        // Flattened sections cannot deny unknown keys themselves, so the top level is checked here.
        let table: toml::Table = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        if let Some(k) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            let at = line_of_key(text, k).map_or(String::new(), |n| format!("line {n}: "));
            let hint = crate::redact::nearest(k, SECTIONS)
                .map_or(String::new(), |n| format!(" (did you mean `{n}`?)"));
            return Err(Invalid(format!(
                "{at}unknown section `{k}`{hint}; expected one of {}",
                SECTIONS.join(", ")
            )));
        }
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let e = &self.engine;
        if e.interval_ms() < 100 {
            return Err("engine.interval must be at least 100ms".into());
        }
        if e.lateness >= e.interval {
            return Err("engine.lateness must be shorter than engine.interval".into());
        }
        if e.batch_size == 0 || e.queue_batches == 0 {
            return Err("engine.batch_size and engine.queue_batches must be positive".into());
        }
        if self.state.checkpoint_interval < e.interval {
            return Err("state.checkpoint_interval must be at least engine.interval".into());
        }
        for r in &self.rabbitmq {
            r.validate()?;
        }
        for k in &self.kafka {
            k.validate()?;
        }
        if let Some(s) = &self.scale_out {
            s.validate(&self.kafka)?;
        }
        let latency = &self.detectors.latency;
        if !(1..=5).contains(&latency.significant_digits) {
            return Err("latency.significant_digits must be 1 to 5".into());
        }
        if latency.long_persistence < latency.persistence {
            return Err(format!(
                "latency.long_persistence ({}) must be at least latency.persistence ({})",
                latency.long_persistence, latency.persistence
            )
            .into());
        }
        let http_url = |what: &str, url: &str| {
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(())
            } else {
                Err(format!("{what}.url must be an http:// or https:// URL"))
            }
        };
        for a in &self.alertmanager {
            http_url("alertmanager", &a.url)?;
            if a.resend_interval.is_zero() {
                return Err("alertmanager.resend_interval must be positive".into());
            }
        }
        for w in &self.webhook {
            http_url("webhook", &w.url)?;
        }
        for (i, w) in self.silences.iter().enumerate() {
            w.schedule()
                .map_err(|e| format!("silence #{}: {e}", i + 1))?;
        }
        for (i, o) in self.overrides.iter().enumerate() {
            self.detectors
                .merged(&o.settings)
                .map_err(|m| format!("override #{}: {m}", i + 1))?;
        }
        Ok(())
    }

    /// Detector settings for an entity with these labels: the defaults, then each matching override.
    pub fn detectors_for<'a>(
        &self,
        labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> DetectorConfig {
        let mut out = self.detectors.clone();
        for o in &self.overrides {
            let hit = o
                .matches
                .iter()
                .all(|(k, v)| labels.clone().any(|(lk, lv)| lk == k && lv == v));
            if hit {
                // Validated at load time, so merging cannot fail here.
                out = out.merged(&o.settings).unwrap_or(out);
            }
        }
        out
    }
}

/// Expands the references to secrets kept out of the config file, in its double-quoted strings:
/// `${env:NAME}` becomes the value of the environment variable `NAME`, `${file:PATH}` the content
/// of the file at `PATH` (without its trailing newline). Returns the text and every value put in:
/// all of them count as secrets, for the log's redaction. An error names the line and the
/// reference, never a value.
pub fn expand_references(text: &str) -> Result<(String, Vec<String>), Invalid> {
    static REFERENCE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let reference = REFERENCE
        .get_or_init(|| regex::Regex::new(r"\$\{(env|file):([^}\n]*)\}").expect("a valid pattern"));
    let mut secrets = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for c in reference.captures_iter(text) {
        let whole = c.get(0).expect("the match");
        let line_start = text[..whole.start()].rfind('\n').map_or(0, |i| i + 1);
        if !inside_string(&text[line_start..whole.start()]) {
            // A reference in a comment, or outside any string, is text like any other.
            continue;
        }
        let line = text[..whole.start()].matches('\n').count() + 1;
        let (kind, name) = (&c[1], c[2].trim());
        let value = match kind {
            "env" => std::env::var(name).map_err(|_| {
                Invalid(format!(
                    "line {line}: ${{env:{name}}}: the environment has no {name}"
                ))
            })?,
            _ => std::fs::read_to_string(name)
                .map_err(|e| {
                    Invalid(format!(
                        "line {line}: ${{file:{name}}}: cannot read it: {e}"
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        };
        out.push_str(&text[last..whole.start()]);
        for ch in value.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        if !value.is_empty() {
            secrets.push(value);
        }
        last = whole.end();
    }
    out.push_str(&text[last..]);
    Ok((out, secrets))
}

/// Whether a line's text up to here ends inside a double-quoted string (and not in a comment).
fn inside_string(before: &str) -> bool {
    let (mut inside, mut escaped) = (false, false);
    for c in before.chars() {
        match c {
            '\\' if inside => escaped = !escaped,
            '"' if !escaped => inside = !inside,
            '#' if !inside => return false,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    inside
}

/// A TOML error as one line: where, what, and for an unknown key the nearest valid one. TOML's
/// own rendering quotes the offending line, which may carry a secret, so only its message is
/// kept, and a value it echoes (`invalid type: string "..."`) is left out.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> Invalid {
    let message = e.message().trim().replace('\n', " ");
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'));
    // Errors inside flattened sections carry the span of the whole document: trust a span only
    // when its line holds the unknown key.
    let spanned = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let line = match unknown {
        Some((key, _)) => spanned
            .filter(|&n| text.lines().nth(n - 1).is_some_and(|l| l.contains(key)))
            .or_else(|| line_of_key(text, key)),
        None => spanned,
    };
    let at = line.map_or(String::new(), |n| format!("line {n}: "));
    match unknown {
        Some((key, rest)) => {
            let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let section = line.and_then(|n| section_at(text, n));
            let within = section.map_or(String::new(), |s| format!(" in {s}"));
            let hint = match crate::redact::nearest(key, expected.iter().copied()) {
                Some(n) => format!(" (did you mean `{n}`?)"),
                None => format!("; valid keys: {}", expected.join(", ")),
            };
            Invalid(format!("{at}unknown key `{key}`{within}{hint}"))
        }
        None => {
            let echoed =
                regex::Regex::new(r#"(invalid (?:type|value): [a-z ]+?) (?:`[^`]*`|"[^"]*")"#)
                    .expect("valid pattern");
            Invalid(format!("{at}{}", echoed.replace_all(&message, "$1")))
        }
    }
}

/// The 1-based line on which `key` is set or opened as a table.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l
                .trim_start()
                .trim_start_matches('[')
                .trim_start_matches('"');
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '"', '.']))
        })
        .map(|i| i + 1)
}

/// The table header (`[engine]`, `[[kafka]]`) in force at a 1-based line.
fn section_at(text: &str, line: usize) -> Option<&str> {
    text.lines()
        .take(line)
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .last()
}

impl DetectorConfig {
    fn merged(&self, patch: &toml::Table) -> Result<DetectorConfig, Invalid> {
        let mut base = toml::Table::try_from(self).map_err(|e| Invalid(e.to_string()))?;
        for (section, values) in patch {
            let (Some(toml::Value::Table(target)), toml::Value::Table(values)) =
                (base.get_mut(section), values)
            else {
                return Err(Invalid(format!("unknown or malformed section `{section}`")));
            };
            for (k, v) in values {
                target.insert(k.clone(), v.clone());
            }
        }
        base.try_into()
            .map_err(|e: toml::de::Error| Invalid(e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.engine.interval, Duration::from_secs(10));
        assert_eq!(c.detectors, DetectorConfig::default());
    }

    #[test]
    fn a_bump_may_not_fire_sooner_than_a_spike() {
        let e = Config::parse("[latency]\npersistence = 4\nlong_persistence = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("latency.long_persistence (3)"), "{e}");
        assert!(Config::parse("[latency]\npersistence = 4\nlong_persistence = 4").is_ok());
    }

    #[test]
    fn overrides_apply_only_to_matching_entities() {
        let c = Config::parse(
            r#"
            [stall]
            stall_after = "90s"
            [[override]]
            match = { topic = "payments.settle" }
            backlog = { min_backlog_seconds = 300.0 }
            "#,
        )
        .unwrap();
        let settle = c.detectors_for([("cluster", "k"), ("topic", "payments.settle")].into_iter());
        let other = c.detectors_for([("topic", "payments.authorize")].into_iter());
        assert_eq!(settle.backlog.min_backlog_seconds, 300.0);
        assert_eq!(other.backlog.min_backlog_seconds, 60.0);
        assert_eq!(settle.stall.stall_after, Duration::from_secs(90));
    }

    #[test]
    fn secrets_come_from_the_environment_and_files_and_are_named_never_quoted_when_missing() {
        std::env::set_var("MQWATCH_TEST_RABBIT_PW", "s3cr\"et\\pw");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kafka-password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let text = format!(
            "[rabbitmq]\nuri = \"amqp://risk:${{env:MQWATCH_TEST_RABBIT_PW}}@mq:5672/%2f\"\n\
             [kafka]\n[kafka.properties]\n\"sasl.password\" = \"${{file:{}}}\"\n",
            file.display()
        );
        let (expanded, secrets) = expand_references(&text).unwrap();
        assert_eq!(secrets, ["s3cr\"et\\pw", "from-a-file"]);
        let c = Config::parse_expanded(&expanded).unwrap();
        assert_eq!(c.rabbitmq[0].uri, "amqp://risk:s3cr\"et\\pw@mq:5672/%2f");
        assert_eq!(c.kafka[0].properties["sasl.password"], "from-a-file");
        let commented = "# token = \"${env:MQWATCH_TEST_NOT_SET}\"\n[http] # ${env:NOPE}\n";
        assert_eq!(
            expand_references(commented).unwrap().0,
            commented,
            "comments stay as they are"
        );
        let e = Config::parse("[http]\ntoken = \"${env:MQWATCH_TEST_NOT_SET}\"\n").unwrap_err();
        assert_eq!(
            e.0,
            "line 2: ${env:MQWATCH_TEST_NOT_SET}: the environment has no MQWATCH_TEST_NOT_SET"
        );
    }

    #[test]
    fn the_example_config_documents_the_defaults() {
        let c = Config::parse(include_str!("../mqwatch.example.toml")).unwrap();
        assert_eq!(c.detectors, DetectorConfig::default());
        let e = EngineConfig::default();
        assert_eq!(
            (c.engine.interval, c.engine.lateness, c.engine.workers),
            (e.interval, e.lateness, e.workers)
        );
        assert_eq!(
            (
                c.engine.queue_batches,
                c.engine.batch_size,
                c.engine.backpressure
            ),
            (e.queue_batches, e.batch_size, e.backpressure)
        );
        assert_eq!(
            (c.engine.startup_timeout, c.engine.shutdown_timeout),
            (e.startup_timeout, e.shutdown_timeout)
        );
        assert_eq!(c.engine.max_series, e.max_series);
        assert_eq!(c.overrides.len(), 1);
    }

    #[test]
    fn the_live_example_documents_the_broker_defaults() {
        let c = Config::parse(include_str!("../mqwatch.live.example.toml")).unwrap();
        assert_eq!(c.rabbitmq, vec![crate::rabbitmq::RabbitConfig::default()]);
        assert_eq!(c.kafka, vec![crate::kafka::KafkaConfig::default()]);
        assert_eq!(c.stdout, Config::default().stdout);
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.state, StateConfig::default());
        assert!(Config::parse("[kafka]\nbootstrap_servers = \"\"").is_err());
        assert!(Config::parse("[rabbitmq]\nuri = \"nope\"").is_err());
    }

    #[test]
    fn one_process_watches_several_clusters() {
        let c = Config::parse(
            "[[kafka]]\ncluster = \"pay\"\n[[kafka]]\ncluster = \"risk\"\nbootstrap_servers = \"10.0.0.1:9092\"\n\
             [rabbitmq]\ncluster = \"mq\"",
        )
        .unwrap();
        let clusters: Vec<&str> = c.kafka.iter().map(|k| k.cluster.as_str()).collect();
        assert_eq!(clusters, ["pay", "risk"]);
        assert_eq!(c.rabbitmq.len(), 1);
        let e = Config::parse("[[kafka]]\ncluster = \"a\"\n[[kafka]]\nclustr = \"b\"")
            .unwrap_err()
            .0;
        assert_eq!(
            e,
            "line 4: unknown key `clustr` in [[kafka]] (did you mean `cluster`?)"
        );
    }

    #[test]
    fn rejects_unknown_settings_and_bad_overrides() {
        assert!(Config::parse("[engine]\nintervall = \"5s\"")
            .unwrap_err()
            .0
            .contains("intervall"));
        let e = Config::parse("[[override]]\nmatch = {topic = \"t\"}\nlatency = { z = 1 }")
            .unwrap_err()
            .0;
        assert!(e.contains("override #1"), "{e}");
        assert!(Config::parse("[engine]\nlateness = \"20s\"").is_err());
        assert!(Config::parse("[latncy]\nz_threshold = 3.0")
            .unwrap_err()
            .0
            .contains("latncy"));
    }

    #[test]
    fn errors_are_one_line_with_the_line_the_key_and_the_nearest_name() {
        assert_eq!(
            Config::parse("[engine]\nworkers = 2\nintervall = \"5s\"")
                .unwrap_err()
                .0,
            "line 3: unknown key `intervall` in [engine] (did you mean `interval`?)"
        );
        assert_eq!(
            Config::parse("stdout = true\n[stal]\nstall_after = \"1m\"")
                .unwrap_err()
                .0,
            "line 2: unknown section `stal` (did you mean `stall`?); expected one of \
             engine, latency, backlog, stall, level, learned, alerts, override, rabbitmq, kafka, \
             alertmanager, webhook, stdout, http, silence, state, scale_out"
        );
        let e = Config::parse("[latency]\nz_treshold = 3.0").unwrap_err().0;
        assert!(e.starts_with("line 2: unknown key `z_treshold`"), "{e}");
        assert!(e.contains("did you mean `z_threshold`"), "{e}");
        for bad in [
            "[rabbitmq]\nuri = \"amqp://guest:pw-in-line@127.0.0.1/%2f\nx = 1",
            "[rabbitmq]\nmanagement_password = 12345678",
            "[rabbitmq]\nmanagement_password = [\"pw-in-line\"]",
        ] {
            let e = Config::parse(bad).unwrap_err().0;
            assert!(!e.contains("pw-in-line") && !e.contains("12345678"), "{e}");
            assert!(!e.contains('\n') && e.starts_with("line 2: "), "{e}");
        }
    }
}
