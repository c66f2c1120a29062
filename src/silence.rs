//! Silences and maintenance windows: alerts that are judged and listed but not delivered.
//!
//! A [`Silence`] is Alertmanager's: label matchers (equality or regex, matching or not), a start
//! and an end in wall-clock time, who made it and why. Made and removed through the API, kept in
//! a JSON file so that they survive a restart. A [`Window`] is a silence that recurs: every day
//! (or on some weekdays) from one UTC time to another, for the labels it matches, from the
//! config's `[[silence]]` tables.
//!
//! The delivery thread asks [`Silences::silencing`] of every alert update: a silenced firing
//! never reaches the sinks; a resolution does exactly when its firing did.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::alert::{Alert, AlertState};
use crate::config::anchored_regex;
pub use crate::config::WindowConfig;

/// One label matcher, as Alertmanager writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence as the API takes it (and Alertmanager's `POST /api/v2/silences` does).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SilenceSpec {
    pub matchers: Vec<Matcher>,
    /// RFC 3339; default now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339.
    pub ends_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// A silence in force from `starts_at` to `ends_at` (Unix ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    #[serde(skip)]
    compiled: Compiled,
}

#[derive(Debug, Clone, Default)]
struct Compiled {
    from_ms: i64,
    to_ms: i64,
    matchers: Vec<(String, Match, bool)>,
}

#[derive(Debug, Clone)]
enum Match {
    Equal(String),
    Regex(Regex),
}

impl Default for Match {
    fn default() -> Self {
        Match::Equal(String::new())
    }
}

/// A bad silence or window: what is wrong with it, for a 400 or a config error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SilenceError(pub String);

fn parse_time(field: &str, text: &str) -> Result<i64, SilenceError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        SilenceError(format!(
            "{field}: {text:?} is not an RFC 3339 time (2026-11-26T23:00:00Z): {e}"
        ))
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn format_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Bounds on what one silence may hold: matchers, and the length of a name, value or pattern.
pub const MAX_MATCHERS: usize = 32;
pub const MAX_MATCHER_LEN: usize = 1024;
/// Silences kept at most (expired ones included, until removed).
pub const MAX_SILENCES: usize = 1000;

fn compile_matchers(matchers: &[Matcher]) -> Result<Vec<(String, Match, bool)>, SilenceError> {
    if matchers.is_empty() {
        return Err(SilenceError(
            "matchers: at least one is needed (a silence of everything is a mute button)".into(),
        ));
    }
    if matchers.len() > MAX_MATCHERS {
        return Err(SilenceError(format!(
            "matchers: {} of them, at most {MAX_MATCHERS}",
            matchers.len()
        )));
    }
    if let Some(m) = matchers
        .iter()
        .find(|m| m.name.len() > MAX_MATCHER_LEN || m.value.len() > MAX_MATCHER_LEN)
    {
        return Err(SilenceError(format!(
            "matcher {:.40}: a name or value of more than {MAX_MATCHER_LEN} bytes",
            m.name
        )));
    }
    matchers
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                return Err(SilenceError(
                    "matchers: a matcher needs a label name".into(),
                ));
            }
            let how = if m.is_regex {
                let re = anchored_regex(&m.value).map_err(|e| {
                    SilenceError(format!(
                        "matcher {}: bad regex {:?}: {}",
                        m.name,
                        m.value,
                        crate::invalid::regex_reason(&e)
                    ))
                })?;
                Match::Regex(re)
            } else {
                Match::Equal(m.value.clone())
            };
            Ok((m.name.clone(), how, m.is_equal))
        })
        .collect()
}

fn matches(matchers: &[(String, Match, bool)], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|(name, how, equal)| {
        let value = labels.get(name).map_or("", String::as_str);
        let hit = match how {
            Match::Equal(v) => v == value,
            Match::Regex(re) => re.is_match(value),
        };
        hit == *equal
    })
}

/// Labels a silence sees of an alert: the alert's own, plus `alertname` (its kind) and
/// `severity`, as they are in Alertmanager.
fn alert_labels(a: &Alert) -> BTreeMap<String, String> {
    let mut l = a.labels.clone();
    l.insert("alertname".into(), a.kind.as_str().into());
    l.insert(
        "severity".into(),
        format!("{:?}", a.severity).to_lowercase(),
    );
    l
}

impl Silence {
    /// Checks a spec and makes it a silence, with `now` as the default start.
    pub fn new(spec: SilenceSpec, now_ms: i64) -> Result<Silence, SilenceError> {
        let from_ms = match &spec.starts_at {
            Some(t) if !t.is_empty() => parse_time("startsAt", t)?,
            _ => now_ms,
        };
        let to_ms = parse_time("endsAt", &spec.ends_at)?;
        if to_ms <= from_ms {
            return Err(SilenceError("endsAt must be after startsAt".into()));
        }
        let matchers = compile_matchers(&spec.matchers)?;
        let mut id_src = format!("{from_ms}/{to_ms}/{}/{now_ms}", spec.created_by);
        for m in &spec.matchers {
            id_src.push_str(&format!(
                "/{}={}{}{}",
                m.name, m.value, m.is_regex, m.is_equal
            ));
        }
        Ok(Silence {
            id: format!("{:016x}", fnv(id_src.as_bytes())),
            matchers: spec.matchers,
            starts_at: format_time(from_ms),
            ends_at: format_time(to_ms),
            created_by: spec.created_by,
            comment: spec.comment,
            compiled: Compiled {
                from_ms,
                to_ms,
                matchers,
            },
        })
    }

    /// Rebuilds what a stored silence needs to match.
    fn revive(mut self) -> Result<Silence, SilenceError> {
        self.compiled = Compiled {
            from_ms: parse_time("startsAt", &self.starts_at)?,
            to_ms: parse_time("endsAt", &self.ends_at)?,
            matchers: compile_matchers(&self.matchers)?,
        };
        Ok(self)
    }

    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.compiled.from_ms {
            "pending"
        } else if now_ms < self.compiled.to_ms {
            "active"
        } else {
            "expired"
        }
    }

    fn silences(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        self.state(now_ms) == "active" && matches(&self.compiled.matchers, labels)
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A window ready to match.
#[derive(Debug, Clone)]
pub struct Window {
    pub config: WindowConfig,
    matchers: Vec<(String, Match, bool)>,
    from_min: u32,
    to_min: u32,
    /// Bit per weekday, Monday first.
    days: u8,
}

impl Window {
    pub fn new(config: WindowConfig) -> Result<Window, SilenceError> {
        let mut matchers: Vec<Matcher> = config
            .equal
            .iter()
            .map(|(k, v)| Matcher {
                name: k.clone(),
                value: v.clone(),
                is_regex: false,
                is_equal: true,
            })
            .collect();
        matchers.extend(config.match_regex.iter().map(|(k, v)| Matcher {
            name: k.clone(),
            value: v.clone(),
            is_regex: true,
            is_equal: true,
        }));
        let schedule = config.schedule().map_err(SilenceError)?;
        Ok(Window {
            matchers: compile_matchers(&matchers)?,
            from_min: schedule.from_min,
            to_min: schedule.to_min,
            days: schedule.days,
            config,
        })
    }

    /// Whether the window is open at `now_ms`. A window past midnight belongs to the day it
    /// opened on.
    pub fn open_at(&self, now_ms: i64) -> bool {
        let minute = (now_ms.div_euclid(60_000)).rem_euclid(24 * 60) as u32;
        let day = now_ms.div_euclid(86_400_000);
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = |d: i64| ((d + 3).rem_euclid(7)) as u8;
        let on = |d: i64| self.days & (1 << weekday(d)) != 0;
        if self.from_min < self.to_min {
            on(day) && minute >= self.from_min && minute < self.to_min
        } else {
            (on(day) && minute >= self.from_min) || (on(day - 1) && minute < self.to_min)
        }
    }
}

/// Every silence and window of a run, and where the silences are kept.
#[derive(Debug, Default)]
pub struct Silences {
    list: Vec<Silence>,
    windows: Vec<Window>,
    path: Option<PathBuf>,
}

impl Silences {
    /// The windows of the config, and the silences kept at `path` (none yet if it does not exist).
    pub fn load(windows: Vec<Window>, path: Option<PathBuf>) -> Result<Silences, SilenceError> {
        let mut list = Vec::new();
        if let Some(p) = &path {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    let stored: Vec<Silence> = serde_json::from_str(&text)
                        .map_err(|e| SilenceError(format!("silences file {}: {e}", p.display())))?;
                    for s in stored {
                        list.push(s.revive().map_err(|e| {
                            SilenceError(format!("silences file {}: {e}", p.display()))
                        })?);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SilenceError(format!("silences file {}: {e}", p.display()))),
            }
        }
        Ok(Silences {
            list,
            windows,
            path,
        })
    }

    pub fn list(&self) -> &[Silence] {
        &self.list
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    pub fn add(&mut self, s: Silence) -> Result<(), SilenceError> {
        if self.list.len() >= MAX_SILENCES {
            return Err(SilenceError(format!(
                "{MAX_SILENCES} silences already: remove some (expired ones too) first"
            )));
        }
        self.list.push(s);
        self.save()
    }

    /// Removes a silence; `false` if there was none with this id.
    pub fn remove(&mut self, id: &str) -> Result<bool, SilenceError> {
        let before = self.list.len();
        self.list.retain(|s| s.id != id);
        if self.list.len() == before {
            return Ok(false);
        }
        self.save().map(|_| true)
    }

    /// Written to a temporary file and renamed, so that a crash leaves the old file or the new.
    fn save(&self) -> Result<(), SilenceError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fail =
            |e: std::io::Error| SilenceError(format!("silences file {}: {e}", path.display()));
        let json = serde_json::to_string_pretty(&self.list).expect("silences serialise");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// What silences this alert at `now_ms`, if anything: a silence's id or `window: <comment>`.
    pub fn silencing(&self, a: &Alert, now_ms: i64) -> Option<String> {
        let labels = alert_labels(a);
        if let Some(s) = self.list.iter().find(|s| s.silences(&labels, now_ms)) {
            return Some(s.id.clone());
        }
        self.windows
            .iter()
            .find(|w| w.open_at(now_ms) && matches(&w.matchers, &labels))
            .map(|w| {
                format!(
                    "window {}–{} {}",
                    w.config.from, w.config.to, w.config.comment
                )
            })
    }
}

/// What reaches the sinks: a firing update unless silenced; a resolution unless the episode's
/// firing was withheld (a subscriber that saw it fire sees it end, one that did not sees nothing).
/// An episode that fired before a restart resolves after it: what the gate remembers is what it
/// withheld, so after a restart it errs towards delivering a resolution, never towards an episode
/// that does not end.
#[derive(Debug, Default)]
pub struct Gate {
    delivered: std::collections::HashSet<String>,
    withheld: std::collections::HashSet<String>,
}

impl Gate {
    pub fn passes(&mut self, a: &Alert, silenced: bool) -> bool {
        match a.state {
            AlertState::Firing if silenced => {
                if !self.delivered.contains(&a.id) {
                    self.withheld.insert(a.id.clone());
                }
                false
            }
            AlertState::Firing => {
                self.withheld.remove(&a.id);
                if !self.delivered.contains(&a.id) {
                    self.delivered.insert(a.id.clone());
                }
                true
            }
            AlertState::Resolved => {
                self.delivered.remove(&a.id);
                !self.withheld.remove(&a.id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{AlertKind, Severity};

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            kind: AlertKind::BacklogGrowth,
            severity: Severity::Warning,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Alert::example()
        }
    }

    fn spec(matchers: Vec<Matcher>, ends_at: &str) -> SilenceSpec {
        SilenceSpec {
            matchers,
            starts_at: None,
            ends_at: ends_at.into(),
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn a_silence_matches_by_equality_and_anchored_regex_while_active() {
        let s = Silence::new(
            spec(
                vec![
                    m("topic", "payments\\..*", true, true),
                    m("alertname", "backlog_growth", false, true),
                    m("consumergroup", "audit", false, false),
                ],
                "2030-01-01T00:00:00Z",
            ),
            NOW,
        )
        .unwrap();
        let mut set = Silences::default();
        set.add(s).unwrap();
        let hit = alert(&[("topic", "payments.settle"), ("consumergroup", "ledger")]);
        assert!(set.silencing(&hit, NOW + 1).is_some());
        let audit = alert(&[("topic", "payments.settle"), ("consumergroup", "audit")]);
        assert!(set.silencing(&audit, NOW + 1).is_none(), "!= excludes it");
        let prefix_only = alert(&[("topic", "xpayments.settle")]);
        assert!(set.silencing(&prefix_only, NOW + 1).is_none(), "anchored");
        let later = 1_900_000_000_000;
        assert!(set.silencing(&hit, later).is_none(), "expired");
    }

    #[test]
    fn a_resolution_is_delivered_exactly_when_its_firing_was() {
        let mut gate = Gate::default();
        let mut a = alert(&[]);
        assert!(!gate.passes(&a, true), "silenced firing held back");
        a.state = AlertState::Resolved;
        assert!(!gate.passes(&a, false), "so is its resolution");
        let mut b = alert(&[]);
        b.id = "b".into();
        assert!(gate.passes(&b, false));
        assert!(
            !gate.passes(&b, true),
            "an update while silenced is held back"
        );
        b.state = AlertState::Resolved;
        assert!(
            gate.passes(&b, true),
            "the resolution of a delivered firing goes out"
        );
        let mut fresh = Gate::default();
        assert!(
            fresh.passes(&b, false),
            "after a restart, an episode that fired before it still resolves"
        );
    }

    #[test]
    fn bad_silences_say_what_is_wrong() {
        let err = |s: SilenceSpec| Silence::new(s, NOW).unwrap_err().0;
        assert!(err(spec(vec![], "2030-01-01T00:00:00Z")).contains("at least one"));
        assert!(
            err(spec(vec![m("q", "(", true, true)], "2030-01-01T00:00:00Z")).contains("bad regex")
        );
        assert!(err(spec(vec![m("q", "x", false, true)], "tomorrow")).contains("RFC 3339"));
        assert!(
            err(spec(vec![m("q", "x", false, true)], "2020-01-01T00:00:00Z")).contains("after")
        );
    }

    #[test]
    fn silences_survive_a_restart_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silences.json");
        let mut set = Silences::load(Vec::new(), Some(path.clone())).unwrap();
        let s = Silence::new(
            spec(vec![m("queue", "q", false, true)], "2030-01-01T00:00:00Z"),
            NOW,
        )
        .unwrap();
        let id = s.id.clone();
        set.add(s).unwrap();
        let again = Silences::load(Vec::new(), Some(path.clone())).unwrap();
        assert_eq!(again.list().len(), 1);
        assert!(again
            .silencing(&alert(&[("queue", "q")]), NOW + 5)
            .is_some());
        let mut again = again;
        assert!(again.remove(&id).unwrap());
        assert!(!again.remove(&id).unwrap());
        assert!(Silences::load(Vec::new(), Some(path))
            .unwrap()
            .list()
            .is_empty());
    }

    #[test]
    fn a_daily_window_opens_on_its_days_and_may_run_past_midnight() {
        let w = Window::new(WindowConfig {
            equal: [("topic".to_string(), "payments.settle".to_string())].into(),
            match_regex: BTreeMap::new(),
            from: "23:00".into(),
            to: "00:30".into(),
            days: vec!["fri".into()],
            comment: "settlement".into(),
        })
        .unwrap();
        // 2026-11-27 is a Friday.
        let friday = parse_time("t", "2026-11-27T23:10:00Z").unwrap();
        let saturday_early = parse_time("t", "2026-11-28T00:20:00Z").unwrap();
        let saturday_late = parse_time("t", "2026-11-28T23:10:00Z").unwrap();
        assert!(w.open_at(friday));
        assert!(
            w.open_at(saturday_early),
            "the Friday window runs past midnight"
        );
        assert!(!w.open_at(saturday_late));
        let set = Silences::load(vec![w], None).unwrap();
        let a = alert(&[("topic", "payments.settle")]);
        assert!(set.silencing(&a, friday).unwrap().contains("settlement"));
        assert!(set
            .silencing(&alert(&[("topic", "other")]), friday)
            .is_none());
        assert!(Window::new(WindowConfig {
            from: "25:00".into(),
            ..set.windows()[0].config.clone()
        })
        .is_err());
    }
}
