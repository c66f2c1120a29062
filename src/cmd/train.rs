//! `mqwatch train`: fit learned baselines from history (labelled incidents left out).

use std::path::PathBuf;

use super::{check_files, CmdError, Session};
use crate::dataset::labels::LabelFile;
use crate::dataset::train::{collect_rows, train};
use crate::learn::{ModelFile, TrainOptions};

/// Fit learned baselines (one Gaussian mixture per entity class, with seasonal profiles) from
/// history; intervals inside the labelled incidents are left out.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, required = true, num_args = 1..)]
    events: Vec<PathBuf>,
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The model file to write, e.g. models/payments.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Name recorded in the model [default: the file name of --out].
    #[arg(long)]
    name: Option<String>,
    /// Quantile of held-out normal intervals' scores that sets the threshold.
    #[arg(long, default_value_t = 0.999)]
    threshold_quantile: f64,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    if !(0.5..1.0).contains(&a.threshold_quantile) {
        return Err(CmdError::Usage(
            "--threshold-quantile must be in [0.5, 1)".into(),
        ));
    }
    let config = s.config(a.config.as_deref())?;
    check_files(&a.events)?;
    let label_file = a.labels.as_deref().map(LabelFile::load).transpose()?;
    let opts = TrainOptions {
        name: a.name.unwrap_or_else(|| {
            a.out
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned())
        }),
        threshold_quantile: a.threshold_quantile,
        ..Default::default()
    };
    let (rows, span) =
        collect_rows(&config, &a.events).map_err(crate::dataset::train::TrainError::from)?;
    let with_labels = label_file.as_ref().zip(a.labels.as_deref());
    let model = train(&rows, span, with_labels, &a.events, &opts)?;
    model.save(&a.out)?;
    print!("{}", model_summary(&model));
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn model_summary(m: &ModelFile) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<13} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}  vetoes\n",
        "class", "train", "excluded", "components", "threshold", "holdout", "incident"
    );
    for (class, c) in &m.classes {
        let e = &c.evaluation;
        let _ = writeln!(
            out,
            "{:<13} {:>9} {:>9} {:>10} {:>10.2} {:>8.2}% {:>9}  {}",
            class.as_str(),
            e.train_intervals,
            m.training
                .excluded_intervals
                .get(class)
                .copied()
                .unwrap_or(0),
            c.mixture.weights.len(),
            c.threshold,
            100.0 * e.holdout_flagged,
            e.incident_flagged
                .map_or("-".into(), |f| format!("{:.1}%", 100.0 * f)),
            // Too little evidence to hold findings back: said here, and the engine obeys.
            c.veto_refused()
                .map_or("yes".into(), |why| format!("no: {why}")),
        );
    }
    out
}
