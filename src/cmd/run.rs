//! `mqwatch run`: watch live brokers until Ctrl-C, SIGTERM or `--for`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::{undelivered, CmdError, Session};

/// Watch live brokers as the config says ([[rabbitmq]], [[kafka]]); alerts to stdout and the
/// brokers' alert topics, until interrupted or --for elapses.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Stop after this long (e.g. 10m); default: until Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    let models = s.models.load()?;
    if let Ok(token) = std::env::var("MQWATCH_API_TOKEN") {
        s.redactor.add(&token);
    }
    let config = s.config(Some(&a.config))?;
    if config.rabbitmq.is_empty() && config.kafka.is_empty() {
        return Err(CmdError::Usage(format!(
            "{}: no live source configured (add a [rabbitmq] or [kafka] section)",
            a.config.display()
        )));
    }
    if let Some(d) = a.duration {
        let timer = s.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            timer.store(true, Ordering::Relaxed);
        });
    }
    let report = crate::run::live(config, models, s.stop.clone())?;
    for line in &report.sinks {
        eprintln!("{line}");
    }
    let edges = crate::telemetry::registry().totals();
    let count = |name: &str| edges.get(name).copied().unwrap_or(0);
    let (failures, outages) = (count("broker_failures"), count("broker_outages"));
    eprintln!(
        "{}; {} alert updates; {failures} failed broker attempts, {outages} lost connections; {:.0} s",
        crate::telemetry::input_summary(),
        report.alert_updates,
        report.elapsed.as_secs_f64()
    );
    undelivered(&report.undelivered)
}
