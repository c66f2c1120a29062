//! A port of the Numenta Anomaly Benchmark's scorer (its sweeper), to judge detectors on NAB.
//!
//! Each labelled window rewards the first detection inside it by the scaled sigmoid of its
//! position (early detections earn most); detections outside windows cost the profile's FP
//! weight, scaled by how far they fall after the preceding window; every window without a
//! detection costs the FN weight. The first 15% of a file (at most 750 rows) is probationary and
//! not scored, and windows entirely inside it do not count. Totals are normalised so that the
//! null detector scores 0 and the perfect one 100.

use std::collections::BTreeMap;
use std::path::Path;

/// A cost matrix: NAB's three application profiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// 2 / (1 + e^(5y)) - 1, and -1 far (more than three window widths) after a window.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Rows at the start of a file that are not scored.
pub fn probation_rows(rows: usize) -> usize {
    ((0.15 * rows as f64).floor() as usize).min(750)
}

/// Per row: the weighted score a detection there would earn (NAB's S(t)) and its window.
pub fn row_scores(
    timestamps: &[i64],
    windows: &[(i64, i64)],
    p: &Profile,
) -> Vec<(f64, Option<usize>)> {
    let index_of = |t: i64| timestamps.iter().position(|&x| x == t);
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(timestamps.len());
    let mut pending = windows.iter().enumerate().peekable();
    let mut current: Option<(usize, usize, f64)> = None; // (window, right index, width)
    let mut previous: Option<(usize, f64)> = None; // (right index, width)
    for (i, &t) in timestamps.iter().enumerate() {
        if let Some(&(w, &(start, end))) = pending.peek() {
            if t == start {
                pending.next();
                let right = index_of(end).unwrap_or(timestamps.len() - 1);
                current = Some((w, right, (right - i + 1) as f64));
            }
        }
        let scored = match current {
            Some((w, right, width)) => {
                let position = -((right as f64 - i as f64 + 1.0) / width);
                (scaled_sigmoid(position) * p.tp / max_tp, Some(w))
            }
            None => {
                let unweighted = match previous {
                    None => -1.0,
                    Some((right, width)) => {
                        scaled_sigmoid((i as f64 - right as f64).abs() / (width - 1.0))
                    }
                };
                (unweighted * p.fp, None)
            }
        };
        out.push(scored);
        if let Some((_, right, width)) = current {
            if i == right {
                previous = Some((right, width));
                current = None;
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileScore {
    pub score: f64,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
    /// Windows that count (not entirely inside the probationary period).
    pub windows: usize,
}

/// Scores detections (one flag per row) on one file.
pub fn score_file(
    timestamps: &[i64],
    windows: &[(i64, i64)],
    detections: &[bool],
    p: &Profile,
) -> FileScore {
    score_rows(timestamps, windows, detections, p).0
}

/// The file's score and each row's contribution to it (NAB's S(t) column): a false positive's
/// cost at its row, and each window's outcome (the credit of its first detection, or the miss
/// penalty) at the window's first scored row. Probationary rows contribute nothing.
pub fn score_rows(
    timestamps: &[i64],
    windows: &[(i64, i64)],
    detections: &[bool],
    p: &Profile,
) -> (FileScore, Vec<f64>) {
    let rows = row_scores(timestamps, windows, p);
    let start = probation_rows(timestamps.len());
    // Each detected window and the credit of its first detection.
    let mut found = BTreeMap::new();
    // Each counted window and its first scored row, where its outcome is booked.
    let mut counted = BTreeMap::new();
    let mut s = FileScore::default();
    let mut contributions = vec![0.0; rows.len()];
    for (i, &(weighted, window)) in rows.iter().enumerate().skip(start) {
        let detected = detections.get(i).copied().unwrap_or(false);
        match (window, detected) {
            (Some(w), true) => {
                s.tp += 1;
                // Only the first detection in a window counts.
                found.entry(w).or_insert(weighted);
            }
            (Some(_), false) => s.fn_ += 1,
            (None, true) => {
                s.fp += 1;
                contributions[i] = weighted;
            }
            (None, false) => s.tn += 1,
        }
        if let Some(w) = window {
            counted.entry(w).or_insert(i);
        }
    }
    for (w, first_row) in &counted {
        contributions[*first_row] += found.get(w).copied().unwrap_or(-p.fn_);
    }
    s.windows = counted.len();
    s.score = contributions.iter().sum();
    (s, contributions)
}

/// NAB's normalised score of a raw total over files with `windows` counted windows in all.
pub fn normalised(raw_total: f64, windows: usize, p: &Profile) -> f64 {
    let null = -p.fn_ * windows as f64;
    let perfect = p.tp * windows as f64;
    100.0 * (raw_total - null) / (perfect - null)
}

/// A corpus file that cannot be read: which file, where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NabError(String);

impl From<String> for NabError {
    fn from(s: String) -> NabError {
        NabError(s)
    }
}

/// Parses NAB's timestamps (`2014-03-14 03:31:00`, optionally with `.000000`) to Unix seconds.
pub fn parse_timestamp(s: &str) -> Result<i64, NabError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let plain = s.split('.').next().unwrap_or(s).trim();
    time::PrimitiveDateTime::parse(plain, &fmt)
        .map(|t| t.assume_utc().unix_timestamp())
        .map_err(|e| NabError(format!("timestamp {s:?}: {e}")))
}

/// NAB's label windows: `{"<category>/<file>.csv": [[start, end], ...]}`.
pub fn load_windows(path: &Path) -> Result<BTreeMap<String, Vec<(i64, i64)>>, NabError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    raw.into_iter()
        .map(|(file, ws)| {
            let ws = ws
                .iter()
                .map(|(a, b)| Ok((parse_timestamp(a)?, parse_timestamp(b)?)))
                .collect::<Result<Vec<_>, NabError>>()?;
            Ok((file, ws))
        })
        .collect()
}

/// One NAB data file: `timestamp,value` rows.
pub struct Series {
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

pub fn load_series(path: &Path) -> Result<Series, NabError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut s = Series {
        timestamps: Vec::new(),
        values: Vec::new(),
    };
    for (n, line) in text.lines().enumerate().skip(1) {
        let (t, v) = line
            .split_once(',')
            .ok_or_else(|| format!("{}:line {}: not `timestamp,value`", path.display(), n + 1))?;
        s.timestamps.push(parse_timestamp(t)?);
        s.values.push(
            v.trim()
                .parse()
                .map_err(|e| format!("{}:line {}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(s)
}

/// Streams one series through the engine (generic-gauge path, one interval per row step) and
/// returns the rows where an alert episode fired.
pub fn detect(config: &crate::config::Config, name: &str, s: &Series) -> Vec<bool> {
    use std::sync::Arc;
    let mut steps: Vec<i64> = s
        .timestamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    steps.sort_unstable();
    let step = steps.get(steps.len() / 2).copied().unwrap_or(300).max(1) as u64;
    let mut cfg = config.clone();
    cfg.engine.interval = std::time::Duration::from_secs(step);
    cfg.engine.lateness = std::time::Duration::from_millis(step * 500);
    cfg.engine.workers = 1;
    let (pipeline, alerts) = crate::pipeline::Pipeline::start(Arc::new(cfg));
    let collector = std::thread::spawn(move || alerts.into_iter().collect::<Vec<_>>());
    let mut ingest = pipeline.ingest();
    let labels: crate::event::LabelVec = [(
        std::borrow::Cow::Borrowed("file"),
        std::borrow::Cow::Borrowed(name),
    )]
    .into_iter()
    .collect();
    for (&t, &v) in s.timestamps.iter().zip(&s.values) {
        ingest.push(&crate::event::RawEvent {
            ts: t * 1000,
            name: std::borrow::Cow::Borrowed("nab_value"),
            labels: labels.clone(),
            value: v,
            kind: None,
        });
    }
    drop(ingest);
    pipeline.finish();
    let mut detections = vec![false; s.timestamps.len()];
    for a in collector
        .join()
        .expect("alert collector")
        .iter()
        .filter(|a| a.ts == a.started_at)
    {
        // An alert closes the interval of the row before its time.
        let row = s.timestamps.partition_point(|&t| t * 1000 < a.started_at);
        if row > 0 {
            detections[row - 1] = true;
        }
    }
    detections
}

/// mqwatch's normalised score per profile over a NAB corpus directory.
pub fn score_corpus(
    corpus: &Path,
    config: &crate::config::Config,
) -> Result<BTreeMap<&'static str, f64>, NabError> {
    let windows = load_windows(&corpus.join("labels/combined_windows.json"))?;
    let mut raw: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    for (file, ws) in &windows {
        let series = load_series(&corpus.join("data").join(file))?;
        let detections = detect(config, file, &series);
        for p in PROFILES {
            let s = score_file(&series.timestamps, ws, &detections, &p);
            let e = raw.entry(p.name).or_default();
            e.0 += s.score;
            e.1 += s.windows;
        }
    }
    Ok(PROFILES
        .iter()
        .map(|p| (p.name, normalised(raw[p.name].0, raw[p.name].1, p)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_rewards_early_detections_and_punishes_far_ones() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!(scaled_sigmoid(0.5) < 0.0);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(22_695), 750);
    }

    #[test]
    fn a_detection_at_a_window_start_scores_one_and_a_miss_costs_fn() {
        let ts: Vec<i64> = (0..100).collect();
        let w = [(50, 59)];
        let mut hit = vec![false; 100];
        hit[50] = true;
        hit[55] = true; // a second detection in the same window adds nothing
        let s = score_file(&ts, &w, &hit, &PROFILES[0]);
        assert!((s.score - 1.0).abs() < 1e-9, "{s:?}");
        assert_eq!((s.tp, s.windows), (2, 1));
        let miss = score_file(&ts, &w, &[false; 100], &PROFILES[2]);
        assert_eq!(miss.score, -2.0);
        assert_eq!(normalised(-2.0, 1, &PROFILES[2]), 0.0);
        assert_eq!(normalised(1.0, 1, &PROFILES[2]), 100.0);
    }

    #[test]
    fn false_positives_cost_less_right_after_a_window() {
        let ts: Vec<i64> = (0..200).collect();
        let rows = row_scores(&ts, &[(50, 59)], &PROFILES[0]);
        assert_eq!(rows[40].0, -0.11, "before any window");
        assert!(rows[61].0 > rows[80].0, "{} vs {}", rows[61].0, rows[80].0);
        assert_eq!(rows[199].0, -0.11, "far after it");
    }

    #[test]
    fn parses_nab_timestamps() {
        assert_eq!(
            parse_timestamp("2014-03-14 03:31:00.000000").unwrap(),
            parse_timestamp("2014-03-14 03:31:00").unwrap()
        );
        assert!(parse_timestamp("14/03/2014").is_err());
    }
}
