//! `mqwatch nab`: mqwatch's detectors on the Numenta Anomaly Benchmark, beside the scoreboard.

use std::path::PathBuf;

use super::{CmdError, Session};

/// Score mqwatch's own detectors on the Numenta Anomaly Benchmark corpus (data/, labels/,
/// results/final_results.json) and print them beside the published scoreboard.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    corpus: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    let config = s.config(a.config.as_deref())?;
    if !a.corpus.join("labels/combined_windows.json").is_file() {
        return Err(CmdError::Usage(format!(
            "{}: not a NAB corpus (no labels/combined_windows.json)",
            a.corpus.display()
        )));
    }
    let ours = crate::dataset::nab::score_corpus(&a.corpus, &config)?;
    let published: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>> =
        std::fs::read_to_string(a.corpus.join("results/final_results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let mut rows: Vec<(String, [f64; 3])> = published
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                crate::dataset::nab::PROFILES.map(|p| s.get(p.name).copied().unwrap_or(f64::NAN)),
            )
        })
        .collect();
    rows.push((
        "mqwatch".into(),
        crate::dataset::nab::PROFILES.map(|p| ours[p.name]),
    ));
    rows.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
    println!(
        "{:<20} {:>9} {:>19} {:>19}",
        "detector", "standard", "reward_low_FP_rate", "reward_low_FN_rate"
    );
    for (name, s) in rows {
        let mark = if name == "mqwatch" { " <" } else { "" };
        println!(
            "{:<20} {:>9.1} {:>19.1} {:>19.1}{mark}",
            name, s[0], s[1], s[2]
        );
    }
    Ok(())
}
