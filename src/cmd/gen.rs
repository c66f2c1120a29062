//! `mqwatch gen`: labelled scenarios on disk (events and labels).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CmdError, Session};
use crate::dataset::gen::{generate, GenOptions, GenSummary, DEFAULT_START_MS};

/// Generate a labelled scenario: DIR/events.jsonl and DIR/labels.json.
#[derive(clap::Args)]
pub struct Args {
    /// payments (every incident kind), quiet (traps only), wide (another topology: more
    /// partitions and groups, slow committers, several vhosts, subtler incidents), sparse (thin
    /// traffic, recurring bursts and batch dumps), noisy (slow, jittery scrapes, frequent
    /// rebalances, counter resets, bimodal latency), each also with -quiet (traps only), or one
    /// incident kind, alone or after a topology and `:` (wide:group-stop): partition-stall,
    /// group-stop, latency-spike, latency-drift, backlog-growth, rabbit-consumers-gone,
    /// rabbit-unacked-stuck.
    #[arg(long, default_value = "payments")]
    scenario: String,
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Compress the events (events.jsonl.gz).
    #[arg(long)]
    gzip: bool,
    /// Scrape Kafka and RabbitMQ every this many seconds instead of the family's own interval
    /// (15 s; 15 or 30 s on noisy): the same world and incidents, seen more or less often.
    #[arg(long, value_name = "SECS")]
    scrape_interval: Option<f64>,
}

pub fn run(_: &Session, a: Args) -> Result<(), CmdError> {
    if !(a.hours > 0.0 && a.hours <= 24.0 * 31.0) {
        return Err(CmdError::Usage("--hours must be between 0 and 744".into()));
    }
    if a.scrape_interval
        .is_some_and(|s| !(1.0..=600.0).contains(&s))
    {
        return Err(CmdError::Usage(
            "--scrape-interval must be between 1 and 600 seconds".into(),
        ));
    }
    let opts = GenOptions {
        scenario: a.scenario,
        hours: a.hours,
        seed: a.seed,
        start_ms: DEFAULT_START_MS,
        scrape_s: a.scrape_interval,
    };
    let (events, labels, summary) = write_scenario(&opts, &a.out, a.gzip)?;
    eprintln!(
        "wrote {} events ({} incidents, {} traps) to {} and {}",
        summary.events,
        summary.incidents,
        summary.traps,
        events.display(),
        labels.display()
    );
    Ok(())
}

/// Writes a scenario into `dir`: the events (gzipped if asked) and `labels.json`.
pub fn write_scenario(
    opts: &GenOptions,
    dir: &Path,
    gzip: bool,
) -> Result<(PathBuf, PathBuf, GenSummary), CmdError> {
    std::fs::create_dir_all(dir)
        .map_err(CmdError::io(format!("cannot create {}", dir.display())))?;
    let events = dir.join(if gzip {
        "events.jsonl.gz"
    } else {
        "events.jsonl"
    });
    let writing = format!("cannot write {}", events.display());
    let file = std::fs::File::create(&events).map_err(CmdError::io(writing.clone()))?;
    let mut w: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::best(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let (labels, summary) = generate(opts, &mut w).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => CmdError::Usage(e.to_string()),
        _ => CmdError::io(writing.clone())(e),
    })?;
    w.flush().map_err(CmdError::io(writing))?;
    drop(w);
    let labels_path = dir.join("labels.json");
    std::fs::write(&labels_path, serde_json::to_string_pretty(&labels)? + "\n").map_err(
        CmdError::io(format!("cannot write {}", labels_path.display())),
    )?;
    Ok((events, labels_path, summary))
}
