//! Scoring alerts against labelled incidents.
//!
//! An incident is *detected* when an alert episode on the same entity (same cluster and topic or
//! queue; partition and group may differ) starts inside `[start, end + 5 min]`; the delay is from
//! the incident's start to the first such episode. It is *rightly kinded* when one of those
//! episodes has the incident's kind (a backlog may also, truthfully, raise latency), and its
//! *first alert is rightly kinded* when the earliest of them has it: what a risk team is paged
//! with first should name the cause, not a symptom. A slow drift (an incident named `*drift*`)
//! creeps up for half an hour before any interval stands out, so its delay is judged on its own,
//! from when it became distinguishable (`distinguishable_at`, where the labels say), and kept out
//! of the median of sudden incidents, which should be seconds. Every other
//! episode is a false alert; those that start on a trap's entity during the trap are listed as
//! the trap's.

use std::collections::BTreeMap;

use serde::Serialize;

use super::labels::{entity_name, same_entity, Incident, LabelFile};
use crate::alert::{Alert, AlertState};
use crate::detect::AlertKind;

/// How long after an incident's end an alert still counts as detecting it.
pub const GRACE_MS: i64 = 5 * 60 * 1000;

/// One alert episode, from its first firing update.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub id: String,
    pub kind: AlertKind,
    pub labels: BTreeMap<String, String>,
    pub started_at: i64,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentResult {
    pub incident: Incident,
    pub detected: bool,
    pub kind_correct: bool,
    /// The first episode that detected it has its kind.
    pub first_kind_correct: bool,
    pub delay_s: Option<f64>,
    pub alert_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub hours: f64,
    pub incidents: usize,
    pub detected: usize,
    pub recall: f64,
    pub kind_accuracy: f64,
    /// Share of detected incidents whose first alert has the incident's kind.
    pub first_kind_accuracy: f64,
    pub false_episodes: usize,
    pub false_per_hour: f64,
    pub median_delay_s: Option<f64>,
    pub max_delay_s: Option<f64>,
    /// Median delay of the incidents that are not slow drifts.
    pub sudden_median_delay_s: Option<f64>,
    /// Longest delay of the slow drifts, from when they became distinguishable (from their
    /// start where the labels do not say).
    pub drift_max_delay_s: Option<f64>,
    /// False episodes that started on a trap's entity during it, by trap name.
    pub trap_alerts: BTreeMap<String, usize>,
    /// Median detection delay of each incident name (or kind), with how many were found.
    pub delay_by_incident: BTreeMap<String, NameDelay>,
    pub per_incident: Vec<IncidentResult>,
    pub false_alerts: Vec<Episode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameDelay {
    pub found: usize,
    pub median_delay_s: Option<f64>,
}

/// What an incident is called in reports: its name, or else its kind.
fn incident_name(i: &Incident) -> &str {
    if i.name.is_empty() {
        i.kind.as_str()
    } else {
        &i.name
    }
}

/// A latency that creeps up over half an hour: distinguishable only minutes after it starts.
fn is_slow_drift(i: &Incident) -> bool {
    i.name.contains("drift")
}

/// Episodes in order of start, from any stream of alert updates.
pub fn episodes<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> Vec<Episode> {
    let mut by_id: BTreeMap<&str, Episode> = BTreeMap::new();
    for a in alerts.into_iter().filter(|a| a.state == AlertState::Firing) {
        by_id.entry(&a.id).or_insert_with(|| Episode {
            id: a.id.clone(),
            kind: a.kind,
            labels: a.labels.clone(),
            started_at: a.started_at,
            summary: a.summary.clone(),
        });
    }
    let mut v: Vec<Episode> = by_id.into_values().collect();
    v.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    v
}

fn matches(i: &Incident, e: &Episode) -> bool {
    (i.start..=i.end + GRACE_MS).contains(&e.started_at) && same_entity(&i.labels, &e.labels)
}

/// Scores `alerts` against `labels` over a dataset spanning `span_ms` (start, end).
pub fn evaluate(labels: &LabelFile, alerts: &[Alert], span_ms: (i64, i64)) -> EvalReport {
    let eps = episodes(alerts);
    let mut used = vec![false; eps.len()];
    let mut per_incident = Vec::new();
    for inc in &labels.incidents {
        let hits: Vec<usize> = (0..eps.len()).filter(|&j| matches(inc, &eps[j])).collect();
        hits.iter().for_each(|&j| used[j] = true);
        // Episodes are in order of start: the first hit is the first page.
        let first = hits.first().map(|&j| eps[j].started_at);
        per_incident.push(IncidentResult {
            incident: inc.clone(),
            detected: first.is_some(),
            kind_correct: hits.iter().any(|&j| eps[j].kind == inc.kind),
            first_kind_correct: hits.first().is_some_and(|&j| eps[j].kind == inc.kind),
            delay_s: first.map(|t| (t - inc.start).max(0) as f64 / 1000.0),
            alert_ids: hits.iter().map(|&j| eps[j].id.clone()).collect(),
        });
    }
    let false_alerts: Vec<Episode> = eps
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| e.clone())
        .collect();
    let mut trap_alerts = BTreeMap::new();
    for trap in &labels.traps {
        let n = false_alerts
            .iter()
            .filter(|e| (trap.start..=trap.end + GRACE_MS).contains(&e.started_at))
            .filter(|e| trap.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .count();
        *trap_alerts.entry(trap.name.clone()).or_insert(0) += n;
    }
    let detected = per_incident.iter().filter(|r| r.detected).count();
    let kind_ok = per_incident.iter().filter(|r| r.kind_correct).count();
    let first_kind_ok = per_incident.iter().filter(|r| r.first_kind_correct).count();
    let share_of_detected = |n: usize| {
        if detected == 0 {
            1.0
        } else {
            n as f64 / detected as f64
        }
    };
    let sorted_delays = |sudden_only: bool| {
        let mut d: Vec<f64> = per_incident
            .iter()
            .filter(|r| !(sudden_only && is_slow_drift(&r.incident)))
            .filter_map(|r| r.delay_s)
            .collect();
        d.sort_by(f64::total_cmp);
        d
    };
    let delays = sorted_delays(false);
    let mut by_name: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &per_incident {
        if let Some(d) = r.delay_s {
            by_name
                .entry(incident_name(&r.incident).into())
                .or_default()
                .push(d);
        }
    }
    let delay_by_incident = by_name
        .into_iter()
        .map(|(name, mut d)| {
            d.sort_by(f64::total_cmp);
            let summary = NameDelay {
                found: d.len(),
                median_delay_s: median(&d),
            };
            (name, summary)
        })
        .collect();
    let hours = (span_ms.1 - span_ms.0).max(1) as f64 / 3_600_000.0;
    let n = labels.incidents.len();
    EvalReport {
        hours,
        incidents: n,
        detected,
        recall: if n == 0 {
            1.0
        } else {
            detected as f64 / n as f64
        },
        kind_accuracy: share_of_detected(kind_ok),
        first_kind_accuracy: share_of_detected(first_kind_ok),
        false_episodes: false_alerts.len(),
        false_per_hour: false_alerts.len() as f64 / hours,
        median_delay_s: median(&delays),
        max_delay_s: delays.last().copied(),
        sudden_median_delay_s: median(&sorted_delays(true)),
        drift_max_delay_s: per_incident
            .iter()
            .filter(|r| is_slow_drift(&r.incident))
            .filter_map(|r| {
                let from = r.incident.distinguishable_at.unwrap_or(r.incident.start);
                let first = r.incident.start + (r.delay_s? * 1000.0) as i64;
                Some((first - from).max(0) as f64 / 1000.0)
            })
            .max_by(f64::total_cmp),
        trap_alerts,
        delay_by_incident,
        per_incident,
        false_alerts,
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

impl EvalReport {
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let fmt_s = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0} s"));
        let _ = writeln!(
            s,
            "{:<24} {:>5} {:>6} {:>8}  entity",
            "incident", "found", "kind", "delay"
        );
        for r in &self.per_incident {
            let i = &r.incident;
            let name = incident_name(i);
            let _ = writeln!(
                s,
                "{:<24} {:>5} {:>6} {:>8}  {}",
                name,
                if r.detected { "yes" } else { "NO" },
                if r.first_kind_correct {
                    "ok"
                } else if r.kind_correct {
                    "later"
                } else if r.detected {
                    "WRONG"
                } else {
                    "-"
                },
                fmt_s(r.delay_s),
                entity_name(&i.labels)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "recall               {:.3} ({}/{})",
            self.recall, self.detected, self.incidents
        );
        let _ = writeln!(s, "kind accuracy        {:.3}", self.kind_accuracy);
        let _ = writeln!(s, "first alert's kind   {:.3}", self.first_kind_accuracy);
        let _ = writeln!(
            s,
            "false alerts         {} in {:.1} h = {:.3} per hour",
            self.false_episodes, self.hours, self.false_per_hour
        );
        let _ = writeln!(
            s,
            "detection delay      median {}, max {}",
            fmt_s(self.median_delay_s),
            fmt_s(self.max_delay_s)
        );
        if let Some(drift) = self.drift_max_delay_s {
            let _ = writeln!(
                s,
                "  sudden incidents   median {}; slow drifts at most {} after they stood out",
                fmt_s(self.sudden_median_delay_s),
                fmt_s(Some(drift))
            );
        }
        if self.delay_by_incident.len() > 1 {
            let by: Vec<String> = self
                .delay_by_incident
                .iter()
                .map(|(name, d)| format!("{name} {} ({})", fmt_s(d.median_delay_s), d.found))
                .collect();
            let _ = writeln!(s, "  by incident        {}", by.join(", "));
        }
        let traps: Vec<String> = self
            .trap_alerts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            s,
            "alerts during traps  {}",
            if traps.is_empty() {
                "-".into()
            } else {
                traps.join(", ")
            }
        );
        for e in &self.false_alerts {
            let _ = writeln!(
                s,
                "  false: {} {} {}",
                e.started_at,
                e.kind.as_str(),
                e.summary
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alert(
        id: &str,
        kind: AlertKind,
        labels: BTreeMap<String, String>,
        started_at: i64,
    ) -> Alert {
        Alert {
            id: id.into(),
            kind,
            labels,
            ts: started_at,
            started_at,
            ..Alert::example()
        }
    }

    #[test]
    fn scores_detection_kind_delay_and_false_alerts() {
        let inc = |topic: &str, kind, start| Incident {
            kind,
            name: String::new(),
            labels: l(&[("cluster", "k"), ("topic", topic), ("partition", "3")]),
            start,
            end: start + 600_000,
            distinguishable_at: None,
        };
        let labels = LabelFile {
            incidents: vec![
                inc("a", AlertKind::ConsumerStall, 1_000_000),
                inc("b", AlertKind::Latency, 5_000_000),
            ],
            ..Default::default()
        };
        let alerts = vec![
            // partition differs from the label: still the same entity
            alert(
                "x",
                AlertKind::ConsumerStall,
                l(&[("cluster", "k"), ("topic", "a"), ("partition", "7")]),
                1_060_000,
            ),
            alert(
                "x",
                AlertKind::ConsumerStall,
                l(&[("cluster", "k"), ("topic", "a")]),
                1_060_000,
            ),
            alert(
                "y",
                AlertKind::BacklogGrowth,
                l(&[("cluster", "k"), ("topic", "b")]),
                5_000_000 + 600_000 + 200_000,
            ),
            alert(
                "z",
                AlertKind::Latency,
                l(&[("cluster", "k"), ("topic", "c")]),
                2_000_000,
            ),
            alert(
                "w",
                AlertKind::Latency,
                l(&[("cluster", "other"), ("topic", "a")]),
                1_100_000,
            ),
        ];
        let r = evaluate(&labels, &alerts, (0, 7_200_000));
        assert_eq!(r.detected, 2);
        assert_eq!(r.recall, 1.0);
        assert_eq!(r.kind_accuracy, 0.5);
        assert_eq!(r.first_kind_accuracy, 0.5);
        assert_eq!(r.per_incident[0].delay_s, Some(60.0));
        assert_eq!(r.false_episodes, 2);
        assert_eq!(r.false_per_hour, 1.0);
        assert_eq!(r.median_delay_s, Some(430.0));
        let by = |name: &str| r.delay_by_incident[name].clone();
        assert_eq!(by("consumer_stall").median_delay_s, Some(60.0));
        assert_eq!(by("latency").median_delay_s, Some(800.0));
        assert!(r
            .to_table()
            .contains("by incident        consumer_stall 60 s (1), latency 800 s (1)"));
        assert!(r.to_table().contains("WRONG"));
    }

    #[test]
    fn a_symptom_paged_before_the_cause_is_a_wrong_first_kind() {
        let topic = l(&[("cluster", "k"), ("topic", "a")]);
        let labels = LabelFile {
            incidents: vec![Incident {
                kind: AlertKind::ConsumerStall,
                name: String::new(),
                labels: topic.clone(),
                start: 0,
                end: 600_000,
                distinguishable_at: None,
            }],
            ..Default::default()
        };
        let alerts = [
            alert("lat", AlertKind::Latency, topic.clone(), 30_000),
            alert("stall", AlertKind::ConsumerStall, topic, 50_000),
        ];
        let r = evaluate(&labels, &alerts, (0, 3_600_000));
        assert_eq!((r.kind_accuracy, r.first_kind_accuracy), (1.0, 0.0));
        assert_eq!(r.per_incident[0].delay_s, Some(30.0));
        assert!(r.to_table().contains("later"));
    }

    #[test]
    fn slow_drifts_are_kept_out_of_the_sudden_incidents_median() {
        let inc = |name: &str, topic: &str, distinguishable_at| Incident {
            kind: AlertKind::Latency,
            name: name.into(),
            labels: l(&[("topic", topic)]),
            start: 0,
            end: 1_800_000,
            distinguishable_at,
        };
        let labels = LabelFile {
            incidents: vec![
                inc("latency_spike", "a", None),
                inc("latency_drift", "b", None),
                inc("latency_drift", "c", Some(240_000)),
            ],
            ..Default::default()
        };
        let alerts = [
            alert("a", AlertKind::Latency, l(&[("topic", "a")]), 20_000),
            alert("b", AlertKind::Latency, l(&[("topic", "b")]), 300_000),
            alert("c", AlertKind::Latency, l(&[("topic", "c")]), 400_000),
        ];
        let r = evaluate(&labels, &alerts, (0, 3_600_000));
        assert_eq!(r.median_delay_s, Some(300.0));
        assert_eq!(r.sudden_median_delay_s, Some(20.0));
        // b: 300 s from its start; c: 160 s from when it stood out.
        assert_eq!(r.drift_max_delay_s, Some(300.0));
        assert!(r.to_table().contains(
            "sudden incidents   median 20 s; slow drifts at most 300 s after they stood out"
        ));
    }

    #[test]
    fn alerts_after_the_grace_period_are_false() {
        let labels = LabelFile {
            incidents: vec![Incident {
                kind: AlertKind::Latency,
                name: String::new(),
                labels: l(&[("queue", "q")]),
                start: 0,
                end: 1000,
                distinguishable_at: None,
            }],
            ..Default::default()
        };
        let r = evaluate(
            &labels,
            &[alert(
                "a",
                AlertKind::Latency,
                l(&[("queue", "q")]),
                1000 + GRACE_MS + 1,
            )],
            (0, 3_600_000),
        );
        assert_eq!((r.detected, r.false_episodes), (0, 1));
    }
}
