//! Alerts: the public output contract, and the lifecycle of an episode.
//!
//! An [`AlertTrack`] turns a detector's per-interval findings into episodes: the first finding
//! fires, an escalation of severity or a change of the affected partitions updates, and `resolve_after`
//! consecutive clean intervals resolve. The id is a hash of kind, entity and start time, so it is
//! the same on every update and every replay, and subscribers can deduplicate on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::AlertConfig;
use crate::detect::{AlertKind, Detector, Finding, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert update, serialised as one JSON object per line or message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub state: AlertState,
    pub kind: AlertKind,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    /// Event time of this update, Unix ms.
    pub ts: i64,
    pub started_at: i64,
    pub resolved_at: Option<i64>,
    pub metric: String,
    pub observed: f64,
    pub expected: f64,
    pub score: f64,
    pub detector: String,
    pub summary: String,
    /// Figures behind the summary, e.g. `lag_messages` and `time_lag_seconds`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, f64>,
}

#[cfg(test)]
impl Alert {
    /// A firing stall on queue `ledger`, for tests to vary with `..Alert::example()`.
    pub(crate) fn example() -> Alert {
        Alert {
            id: "consumer_stall-1".into(),
            state: AlertState::Firing,
            kind: AlertKind::ConsumerStall,
            severity: Severity::Critical,
            labels: [("queue".to_string(), "ledger".to_string())].into(),
            ts: 1_795_000_100_000,
            started_at: 1_795_000_000_000,
            resolved_at: None,
            metric: "ready".into(),
            observed: 40.0,
            expected: 0.0,
            score: 3.0,
            detector: "no_consumers".into(),
            summary: "no consumers for 2m on queue ledger".into(),
            context: [("ready_messages".to_string(), 40.0)].into(),
        }
    }
}

impl Alert {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("alerts always serialise")
    }

    /// The entity part of a routing key or message key: cluster and topic/group or vhost/queue.
    pub fn entity_key(&self) -> String {
        let l = |k: &str| self.labels.get(k).map(String::as_str);
        let parts = [
            l("cluster"),
            l("topic").or(l("vhost")),
            l("consumergroup").or(l("queue")),
        ];
        let key: Vec<&str> = parts.into_iter().flatten().collect();
        if key.is_empty() {
            self.labels.values().cloned().collect::<Vec<_>>().join("/")
        } else {
            key.join("/")
        }
    }
}

/// What an alert is about: the labels that name it and a short display name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub labels: Vec<(Box<str>, Box<str>)>,
    pub display: String,
}

impl Entity {
    pub fn new(labels: Vec<(Box<str>, Box<str>)>, display: String) -> Arc<Entity> {
        Arc::new(Entity { labels, display })
    }

    /// A stable id for this entity seen as `kind`: the kind and a hash of the labels, the same
    /// in every run.
    pub fn id(&self, kind: &str) -> String {
        format!("{kind}-{:016x}", stable_hash(kind, self, &[]))
    }

    /// The labels as alerts and label files carry them.
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// A finding that an episode's cause explains — the latency of a stalled group's messages —
/// carried in the cause's summary and context instead of alerting on its own: one incident, one
/// alert, named for its cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Symptom {
    /// What the symptom is about, e.g. the latency stream's display name.
    pub on: String,
    pub summary: String,
    pub observed: f64,
    pub expected: f64,
}

impl Symptom {
    pub fn of(entity: &Entity, f: &Finding) -> Symptom {
        Symptom {
            on: entity.display.clone(),
            summary: f.summary.clone(),
            observed: f.observed,
            expected: f.expected,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    id: String,
    started_at: i64,
    last: Finding,
    symptom: Option<Symptom>,
}

impl Open {
    /// This episode's alert update at `now`.
    fn alert(
        &self,
        state: AlertState,
        now: i64,
        resolved_at: Option<i64>,
        entity: &Entity,
    ) -> Alert {
        build(
            &self.id,
            state,
            now,
            self.started_at,
            resolved_at,
            entity,
            &self.last,
            self.symptom.as_ref(),
        )
    }
}

/// The lifecycle of one (entity, detector) pair's episodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertTrack {
    open: Option<Open>,
    clean: usize,
    first_clean_at: i64,
    /// From the config in force ([`AlertTrack::configure`]), never from a checkpoint.
    #[serde(skip, default = "one")]
    resolve_after: usize,
    /// The episode that resolved last, when it ended and when its resolution was sent: what an
    /// engine taking over delivers again, in case the one before it could not.
    resolved: Option<(Open, i64, i64)>,
}

fn one() -> usize {
    1
}

impl AlertTrack {
    pub fn new(resolve_after_intervals: usize) -> Self {
        AlertTrack {
            open: None,
            clean: 0,
            first_clean_at: 0,
            resolve_after: resolve_after_intervals.max(1),
            resolved: None,
        }
    }

    pub fn configure(&mut self, cfg: &AlertConfig) {
        self.resolve_after = cfg.resolve_after_intervals.max(1);
    }

    pub fn is_firing(&self) -> bool {
        self.open.is_some()
    }

    /// What an engine that takes this track over delivers again, since the engine before it may
    /// have died before it could: the open episode's latest update (as of `now`), and the last
    /// resolution if it was sent at or after `since`. Subscribers drop repeats by id.
    pub fn announce(&self, now: i64, since: i64, entity: &Entity, out: &mut impl FnMut(Alert)) {
        if let Some((ended, resolved_at, sent)) = &self.resolved {
            if *sent >= since {
                out(ended.alert(AlertState::Resolved, *sent, Some(*resolved_at), entity));
            }
        }
        if let Some(open) = &self.open {
            out(open.alert(AlertState::Firing, now.max(open.started_at), None, entity));
        }
    }

    /// The last finding of the open episode.
    pub fn open_finding(&self) -> Option<&Finding> {
        self.open.as_ref().map(|o| &o.last)
    }

    pub fn observe(
        &mut self,
        now: i64,
        entity: &Entity,
        finding: Option<Finding>,
    ) -> Option<Alert> {
        match (finding, self.open.as_mut()) {
            (Some(f), None) => {
                let id = episode_id(f.kind, entity, now);
                let alert = build(&id, AlertState::Firing, now, now, None, entity, &f, None);
                self.open = Some(Open {
                    id,
                    started_at: now,
                    last: f,
                    symptom: None,
                });
                self.clean = 0;
                Some(alert)
            }
            (Some(mut f), Some(open)) => {
                self.clean = 0;
                // Severity only escalates within an episode: a value hovering at the critical
                // threshold must not send an update every interval.
                f.severity = f.severity.max(open.last.severity);
                let changed = f.severity != open.last.severity || f.detail != open.last.detail;
                open.last = f;
                changed.then(|| open.alert(AlertState::Firing, now, None, entity))
            }
            (None, Some(_)) => {
                if self.clean == 0 {
                    self.first_clean_at = now;
                }
                self.clean += 1;
                if self.clean < self.resolve_after {
                    return None;
                }
                let open = self.open.take()?;
                self.clean = 0;
                let alert =
                    open.alert(AlertState::Resolved, now, Some(self.first_clean_at), entity);
                self.resolved = Some((open, self.first_clean_at, now));
                Some(alert)
            }
            (None, None) => None,
        }
    }

    /// Attaches a symptom to the open episode. The first one of an episode sends an update that
    /// names it; later ones only keep the worst figures for the updates to come. Without an open
    /// episode there is nothing to attach to.
    pub fn attach(&mut self, now: i64, entity: &Entity, symptom: Symptom) -> Option<Alert> {
        let open = self.open.as_mut()?;
        match &mut open.symptom {
            Some(kept) => {
                if symptom.observed > kept.observed {
                    *kept = symptom;
                }
                None
            }
            None => {
                open.symptom = Some(symptom);
                Some(open.alert(AlertState::Firing, now, None, entity))
            }
        }
    }
}

/// A detector together with the lifecycle of its alerts: what an entity holds for each thing it
/// is judged on. `judge` runs the detector on one interval, lets a confirmation (the learned
/// baseline) hold the finding back, and passes any alert update on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged<D> {
    pub detector: D,
    track: AlertTrack,
}

impl<D: Detector> Judged<D> {
    pub fn new(detector: D, cfg: &AlertConfig) -> Self {
        Judged {
            detector,
            track: AlertTrack::new(cfg.resolve_after_intervals),
        }
    }

    /// Takes the settings in force, after a restore from a checkpoint.
    pub fn configure(&mut self, cfg: &D::Config, alerts: &AlertConfig) {
        self.detector.configure(cfg);
        self.track.configure(alerts);
    }

    /// Whether an episode of this detector is open.
    pub fn is_firing(&self) -> bool {
        self.track.is_firing()
    }

    /// What an engine taking over delivers again (see [`AlertTrack::announce`]).
    pub fn announce(&self, now: i64, since: i64, entity: &Entity, out: &mut impl FnMut(Alert)) {
        self.track.announce(now, since, entity, out)
    }

    /// The last finding of the open episode, if one is open.
    pub fn open(&self) -> Option<&Finding> {
        self.track.open_finding()
    }

    /// Judges one closed interval ending at `now`.
    pub fn judge(
        &mut self,
        now: i64,
        entity: &Entity,
        input: D::Input<'_>,
        out: &mut impl FnMut(Alert),
    ) {
        self.judge_confirmed(now, entity, input, |f, _| f, out);
    }

    /// As [`judge`](Self::judge), with `confirm(finding, episode_open)` deciding whether a
    /// finding stands.
    pub fn judge_confirmed(
        &mut self,
        now: i64,
        entity: &Entity,
        input: D::Input<'_>,
        confirm: impl FnOnce(Option<Finding>, bool) -> Option<Finding>,
        out: &mut impl FnMut(Alert),
    ) {
        let finding = self.detector.on_interval(input);
        let finding = confirm(finding, self.track.is_firing());
        if let Some(a) = self.track.observe(now, entity, finding) {
            out(a);
        }
    }

    /// Attaches a symptom to the open episode, if there is one: see [`AlertTrack::attach`].
    pub fn attach(
        &mut self,
        now: i64,
        entity: &Entity,
        symptom: Symptom,
        out: &mut impl FnMut(Alert),
    ) {
        if let Some(a) = self.track.attach(now, entity, symptom) {
            out(a);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    id: &str,
    state: AlertState,
    ts: i64,
    started_at: i64,
    resolved_at: Option<i64>,
    e: &Entity,
    f: &Finding,
    symptom: Option<&Symptom>,
) -> Alert {
    let mut labels = e.label_map();
    for (k, v) in &f.detail {
        labels.insert((*k).to_string(), v.clone());
    }
    let (summary, episode) = match resolved_at {
        None => {
            let mut summary = format!("{} on {}", f.summary, e.display);
            if let Some(s) = symptom {
                summary.push_str(&format!("; symptom: {} on {}", s.summary, s.on));
            }
            (summary, None)
        }
        Some(end) => {
            let lasted = (end - started_at).max(0);
            let secs = std::time::Duration::from_secs((lasted / 1000) as u64);
            let summary = format!(
                "resolved: {} on {}; the episode lasted {}",
                recovery(f.kind),
                e.display,
                humantime::format_duration(secs)
            );
            (summary, Some(("episode_seconds", lasted as f64 / 1000.0)))
        }
    };
    Alert {
        id: id.to_string(),
        state,
        kind: f.kind,
        severity: f.severity,
        labels,
        ts,
        started_at,
        resolved_at,
        metric: f.metric.to_string(),
        observed: round3(f.observed),
        expected: round3(f.expected),
        score: round3(f.score),
        detector: f.detector.to_string(),
        summary,
        context: f
            .context
            .iter()
            .chain(episode.as_ref())
            .copied()
            .chain(symptom.into_iter().flat_map(|s| {
                [
                    ("symptom_latency_ms", s.observed),
                    ("symptom_latency_expected_ms", s.expected),
                ]
            }))
            .map(|(k, v)| (k.to_string(), round3(v)))
            .collect(),
    }
}

/// What a resolution means, per kind: the condition has been absent for `resolve_after` intervals.
fn recovery(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::ConsumerStall => "consumers are making progress again",
        AlertKind::BacklogGrowth => "the backlog is no longer growing",
        AlertKind::Latency => "latency is back within its baseline",
        AlertKind::Level => "the value is back within its usual level",
    }
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// A label name as Prometheus and Alertmanager take it (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
/// with `__`): other characters become `_`, and a name that would still be invalid gets `l_`.
pub fn prometheus_label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") {
        s.insert_str(0, "l_");
    }
    s
}

fn episode_id(kind: AlertKind, e: &Entity, started_at: i64) -> String {
    let h = stable_hash(kind.as_str(), e, &started_at.to_le_bytes());
    format!("{}-{h:016x}", kind.as_str())
}

/// FNV-1a over a tag, the entity's labels and `extra`: stable across builds and platforms,
/// unlike the std hasher.
fn stable_hash(tag: &str, e: &Entity, extra: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(tag.as_bytes());
    for (k, v) in &e.labels {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    eat(extra);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity() -> Arc<Entity> {
        Entity::new(
            vec![
                ("cluster".into(), "k".into()),
                ("topic".into(), "payments".into()),
            ],
            "payments".into(),
        )
    }

    fn finding(sev: Severity, parts: &str) -> Option<Finding> {
        Some(Finding {
            kind: AlertKind::ConsumerStall,
            severity: sev,
            detector: "partition_stalled",
            metric: "lag",
            observed: 10.0,
            expected: 0.0,
            score: 2.0,
            summary: "stalled".into(),
            detail: vec![("partitions", parts.into())],
            context: vec![("lag_messages", 10.0)],
        })
    }

    #[test]
    fn an_episode_fires_once_updates_on_change_and_resolves_once() {
        let e = entity();
        let mut t = AlertTrack::new(3);
        let fired = t.observe(10, &e, finding(Severity::Warning, "3")).unwrap();
        assert_eq!(fired.state, AlertState::Firing);
        assert_eq!(fired.labels["partitions"], "3");
        assert!(
            t.observe(20, &e, finding(Severity::Warning, "3")).is_none(),
            "no repeat"
        );
        let upd = t
            .observe(30, &e, finding(Severity::Critical, "3,7"))
            .unwrap();
        assert_eq!((upd.id.as_str(), upd.started_at), (fired.id.as_str(), 10));
        assert!(t.observe(40, &e, None).is_none());
        assert!(
            t.observe(50, &e, finding(Severity::Critical, "3,7"))
                .is_none(),
            "one clean interval is not enough"
        );
        assert!(t.observe(60, &e, None).is_none());
        assert!(t.observe(70, &e, None).is_none());
        let res = t.observe(80, &e, None).unwrap();
        assert_eq!(res.state, AlertState::Resolved);
        assert_eq!(res.resolved_at, Some(60));
        assert_eq!(res.id, fired.id);
        assert_ne!(
            res.summary, upd.summary,
            "a resolution does not repeat the firing"
        );
        assert!(t.observe(90, &e, None).is_none());
        let again = t.observe(100, &e, finding(Severity::Warning, "1")).unwrap();
        assert_ne!(again.id, fired.id, "a new episode has a new id");
    }

    #[test]
    fn a_resolution_says_what_resolved_it_and_how_long_the_episode_lasted() {
        let e = entity();
        let mut t = AlertTrack::new(2);
        t.observe(0, &e, finding(Severity::Warning, "3")).unwrap();
        t.observe(250_000, &e, finding(Severity::Warning, "3"));
        assert!(t.observe(260_000, &e, None).is_none());
        let res = t.observe(270_000, &e, None).unwrap();
        assert_eq!(
            res.summary,
            "resolved: consumers are making progress again on payments; the episode lasted 4m 20s"
        );
        assert_eq!(res.context["episode_seconds"], 260.0);
    }

    #[test]
    fn a_track_taken_over_announces_its_open_episode_and_its_recent_resolution() {
        let e = entity();
        let mut t = AlertTrack::new(1);
        let mut heard = Vec::new();
        t.announce(5, 0, &e, &mut |a| heard.push(a));
        assert!(heard.is_empty(), "nothing happened yet");
        let first = t.observe(10, &e, finding(Severity::Warning, "3")).unwrap();
        let resolved = t.observe(20, &e, None).unwrap();
        let second = t.observe(30, &e, finding(Severity::Critical, "4")).unwrap();
        t.announce(40, 15, &e, &mut |a| heard.push(a));
        let seen: Vec<(&str, AlertState)> =
            heard.iter().map(|a| (a.id.as_str(), a.state)).collect();
        assert_eq!(
            seen,
            [
                (first.id.as_str(), AlertState::Resolved),
                (second.id.as_str(), AlertState::Firing)
            ]
        );
        assert_eq!(heard[0], resolved, "the resolution as it was sent");
        assert_eq!(heard[1].labels["partitions"], "4");
        heard.clear();
        t.announce(40, 25, &e, &mut |a| heard.push(a));
        assert_eq!(
            heard.len(),
            1,
            "a resolution sent before `since` is not repeated"
        );
    }

    #[test]
    fn label_names_are_made_valid_for_prometheus() {
        assert_eq!(prometheus_label_name("consumergroup"), "consumergroup");
        assert_eq!(
            prometheus_label_name("app.kubernetes/name"),
            "app_kubernetes_name"
        );
        assert_eq!(prometheus_label_name("9lives"), "l_9lives");
        assert_eq!(prometheus_label_name("__meta"), "l___meta");
    }

    #[test]
    fn ids_are_stable_and_alerts_round_trip_as_json() {
        let e = entity();
        let a = AlertTrack::new(1)
            .observe(10, &e, finding(Severity::Warning, "3"))
            .unwrap();
        let b = AlertTrack::new(1)
            .observe(10, &e, finding(Severity::Warning, "3"))
            .unwrap();
        assert_eq!(a.id, b.id);
        let json = a.to_json();
        assert!(
            json.contains(r#""kind":"consumer_stall""#) && json.contains(r#""resolved_at":null"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), a);
        assert_eq!(a.entity_key(), "k/payments");
        assert!(a.summary.ends_with("on payments"));
    }
}
