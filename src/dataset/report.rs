//! The evaluation report: one self-contained HTML page (inline SVG plots) that shows what fired
//! and why: the scorecard, every incident's series with its labelled window, the alerts and the
//! baseline band, and every false alert with its series.
//!
//! The band is the robust baseline the statistical detectors use: the median ± 3 scaled MADs of
//! the entity's last hour of intervals. Intervals the learned model found abnormal are dotted.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use plotters::prelude::*;

use super::eval::{episodes, EvalReport, GRACE_MS};
use super::labels::{entity_name, same_entity};
use crate::alert::{Alert, AlertState, Entity};
use crate::detect::RobustHistory;
use crate::learn::{EntityClass, FeatureRow, ModelSet};

/// Context shown around an incident or a false alert.
const MARGIN_MS: i64 = 30 * 60 * 1000;
/// Intervals behind the baseline band.
const BAND_INTERVALS: usize = 360;

/// One entity's series, in time order.
struct Series<'a> {
    entity: &'a Entity,
    labels: BTreeMap<String, String>,
    class: EntityClass,
    rows: Vec<&'a FeatureRow>,
}

/// Writes `DIR/index.html`.
pub fn write_report(
    dir: &Path,
    title: &str,
    report: &EvalReport,
    alerts: &[Alert],
    rows: &[FeatureRow],
    models: Option<&ModelSet>,
) -> std::io::Result<std::path::PathBuf> {
    let mut by_entity: BTreeMap<*const Entity, Series> = BTreeMap::new();
    for r in rows {
        by_entity
            .entry(Arc::as_ptr(&r.entity))
            .or_insert_with(|| Series {
                entity: &r.entity,
                labels: r.entity.label_map(),
                class: r.class,
                rows: Vec::new(),
            })
            .rows
            .push(r);
    }
    let mut series: Vec<Series> = by_entity.into_values().collect();
    series.iter_mut().for_each(|s| s.rows.sort_by_key(|r| r.ts));
    series.sort_by(|a, b| a.entity.display.cmp(&b.entity.display));
    let threshold = |c: EntityClass| models.and_then(|m| m.get(c)).map(|m| m.threshold);

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{CSS}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    summary(&mut html, report);

    html.push_str("<h2>Incidents</h2>");
    for (n, r) in report.per_incident.iter().enumerate() {
        let i = &r.incident;
        let verdict = match (r.detected, r.kind_correct) {
            (false, _) => "<span class=bad>missed</span>".to_string(),
            (true, ok) => format!(
                "detected after {:.0} s{}",
                r.delay_s.unwrap_or(0.0),
                if ok {
                    ""
                } else {
                    ", <span class=bad>wrong kind</span>"
                }
            ),
        };
        let _ = write!(
            html,
            "<h3 id=\"incident-{n}\">{} on {} — {verdict}</h3>",
            i.kind.as_str(),
            escape(&entity_name(&i.labels))
        );
        let window = (i.start - MARGIN_MS, i.end + GRACE_MS + MARGIN_MS);
        let shown = series
            .iter()
            .filter(|s| class_fits(s.class, i.kind) && names_entity(&i.labels, &s.labels));
        plots(
            &mut html,
            shown,
            window,
            Some((i.start, i.end)),
            alerts,
            threshold,
        );
    }

    html.push_str("<h2>False alerts</h2>");
    if report.false_alerts.is_empty() {
        html.push_str("<p>None.</p>");
    }
    for e in &report.false_alerts {
        let _ = write!(
            html,
            "<h3>{} on {}</h3><p class=summary>{}</p>",
            e.kind.as_str(),
            escape(&entity_name(&e.labels)),
            escape(&e.summary)
        );
        let window = (e.started_at - MARGIN_MS, e.started_at + MARGIN_MS);
        let shown = series
            .iter()
            .filter(|s| class_fits(s.class, e.kind) && names_entity(&e.labels, &s.labels));
        plots(&mut html, shown, window, None, alerts, threshold);
    }
    html.push_str("</body></html>\n");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    std::fs::write(&path, html)?;
    Ok(path)
}

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:2em;max-width:1000px}\
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}\
.bad{color:#c00;font-weight:bold}.summary{color:#444}svg{display:block;margin:4px 0 16px}";

fn summary(html: &mut String, r: &EvalReport) {
    let secs = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0} s"));
    let _ = write!(
        html,
        "<h2>Summary</h2><table>\
         <tr><th>recall</th><td>{:.3} ({}/{})</td></tr>\
         <tr><th>kind accuracy</th><td>{:.3}</td></tr>\
         <tr><th>first alert's kind</th><td>{:.3}</td></tr>\
         <tr><th>false alerts</th><td>{} in {:.1} h = {:.3} per hour</td></tr>\
         <tr><th>detection delay</th><td>median {}, max {}</td></tr>\
         <tr><th>sudden incidents</th><td>median {}; slow drifts at most {} after they stood out</td></tr></table>",
        r.recall,
        r.detected,
        r.incidents,
        r.kind_accuracy,
        r.first_kind_accuracy,
        r.false_episodes,
        r.hours,
        r.false_per_hour,
        secs(r.median_delay_s),
        secs(r.max_delay_s),
        secs(r.sudden_median_delay_s),
        secs(r.drift_max_delay_s)
    );
    html.push_str("<h2>Per incident</h2><table><tr><th>incident</th><th>entity</th><th>found</th><th>kind</th><th>delay</th></tr>");
    for (n, x) in r.per_incident.iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td><a href=\"#incident-{n}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            x.incident.kind.as_str(),
            escape(&entity_name(&x.incident.labels)),
            if x.detected { "yes" } else { "<span class=bad>no</span>" },
            if x.kind_correct { "ok" } else { "<span class=bad>wrong</span>" },
            secs(x.delay_s)
        );
    }
    html.push_str("</table>");
}

/// Latency incidents are seen in latency series; backlog and stalls in groups and queues.
fn class_fits(class: EntityClass, kind: crate::detect::AlertKind) -> bool {
    use crate::detect::AlertKind::*;
    match kind {
        Latency => class == EntityClass::Latency,
        BacklogGrowth | ConsumerStall => class != EntityClass::Latency,
        Level => false,
    }
}

/// Whether an entity's labels are the ones `labels` name: the same entity for scoring, and the
/// same consumer group where both say.
fn names_entity(labels: &BTreeMap<String, String>, mine: &BTreeMap<String, String>) -> bool {
    let group_ok = match (labels.get("consumergroup"), mine.get("consumergroup")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    group_ok && same_entity(labels, mine)
}

fn plots<'a>(
    html: &mut String,
    shown: impl Iterator<Item = &'a Series<'a>>,
    window: (i64, i64),
    labelled: Option<(i64, i64)>,
    alerts: &[Alert],
    threshold: impl Fn(EntityClass) -> Option<f64>,
) {
    let mut any = false;
    for s in shown {
        any = true;
        let mine: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.ts >= window.0 && a.ts <= window.1)
            .filter(|a| names_entity(&a.labels, &s.labels) && class_fits(s.class, a.kind))
            .collect();
        match plot(s, window, labelled, &mine, threshold(s.class)) {
            Ok(svg) => html.push_str(&svg),
            Err(e) => {
                let _ = write!(
                    html,
                    "<p class=bad>plot failed: {}</p>",
                    escape(&e.to_string())
                );
            }
        }
    }
    if !any {
        html.push_str("<p>No series of this entity was measured.</p>");
    }
}

/// A plot the SVG backend could not draw; the report says so in place of the plot.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PlotError(String);

fn plot(
    s: &Series,
    window: (i64, i64),
    labelled: Option<(i64, i64)>,
    alerts: &[&Alert],
    threshold: Option<f64>,
) -> Result<String, PlotError> {
    let first = s.rows.partition_point(|r| r.ts < window.0);
    let last = s.rows.partition_point(|r| r.ts <= window.1);
    let visible = &s.rows[first..last];
    if visible.is_empty() {
        return Ok("<p>No intervals in this window.</p>".into());
    }
    // The band at each visible interval, from the hour of intervals before it, kept the way
    // the detectors keep their baselines.
    let mut history = RobustHistory::new(BAND_INTERVALS);
    for r in &s.rows[first.saturating_sub(BAND_INTERVALS)..first] {
        history.push(r.primary);
    }
    let band: Vec<(i64, f64, f64)> = visible
        .iter()
        .map(|r| {
            let (m, sd) = (history.median(), history.scale());
            history.push(r.primary);
            (r.ts, (m - 3.0 * sd).max(0.0), m + 3.0 * sd)
        })
        .collect();
    let mins = |t: i64| (t - window.0) as f64 / 60_000.0;
    let y_max = visible
        .iter()
        .map(|r| r.primary)
        .chain(band.iter().map(|b| b.2))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let (what, unit) = match s.class {
        EntityClass::Latency => ("p99 latency", "ms"),
        EntityClass::KafkaGroup => ("backlog", "messages"),
        EntityClass::RabbitQueue => ("ready", "messages"),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 260)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| PlotError(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let x_end = mins(window.1);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} — {what} ({unit})", s.entity.display),
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_end, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some((a, b)) = labelled {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(mins(a).max(0.0), 0.0), (mins(b).min(x_end), y_max)],
                    RGBColor(255, 200, 200).mix(0.5).filled(),
                )))
                .map_err(|e| err(&e))?
                .label("labelled incident")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 4), (x + 12, y + 4)],
                        RGBColor(255, 200, 200).filled(),
                    )
                });
        }
        let upper: Vec<(f64, f64)> = band.iter().map(|b| (mins(b.0), b.2)).collect();
        let lower: Vec<(f64, f64)> = band.iter().rev().map(|b| (mins(b.0), b.1)).collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                upper.into_iter().chain(lower).collect::<Vec<_>>(),
                RGBColor(160, 190, 230).mix(0.4).filled(),
            )))
            .map_err(|e| err(&e))?
            .label("baseline (median ± 3 MAD, last hour)")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 4), (x + 12, y + 4)],
                    RGBColor(160, 190, 230).filled(),
                )
            });
        chart
            .draw_series(LineSeries::new(
                visible.iter().map(|r| (mins(r.ts), r.primary)),
                BLUE.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(what)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLUE));
        if let Some(t) = threshold {
            chart
                .draw_series(
                    visible
                        .iter()
                        .filter(|r| r.score.is_some_and(|v| v >= t))
                        .map(|r| Circle::new((mins(r.ts), r.primary), 3, RED.filled())),
                )
                .map_err(|e| err(&e))?
                .label("learned model: abnormal")
                .legend(|(x, y)| Circle::new((x + 6, y), 3, RED.filled()));
        }
        for a in alerts {
            let x = mins(a.ts);
            let style = match a.state {
                AlertState::Firing => RGBColor(200, 0, 0).stroke_width(2),
                AlertState::Resolved => RGBColor(0, 140, 0).stroke_width(2),
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(x, 0.0), (x, y_max)],
                    style,
                )))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let mut legend = String::new();
    for e in episodes(alerts.iter().copied()) {
        let _ = write!(legend, "<li>{}</li>", escape(&e.summary));
    }
    if !legend.is_empty() {
        legend = format!(
            "<ul class=summary>{legend}</ul><p class=summary>red line: alert fired or updated; green line: resolved.</p>"
        );
    }
    Ok(svg + &legend)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
