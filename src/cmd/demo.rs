//! `mqwatch demo`: the main job on a bundled scenario, or live against a local broker.

use super::eval::scored_replay;
use super::gen::write_scenario;
use super::{print_summary, CmdError, Session};
use crate::alert::{Alert, AlertState};
use crate::dataset::gen::{GenOptions, DEFAULT_START_MS};
use crate::dataset::labels::LabelFile;
use crate::pipeline::Learned;

/// Run a bundled six-hour payments scenario through the whole engine; print alerts and a
/// scorecard. With --rabbitmq or --kafka, run a live workload on the local broker instead,
/// inject a consumer stall and print the alerts as a subscriber receives them.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Live demo against RabbitMQ at this AMQP URI.
    #[arg(long, num_args = 0..=1, default_missing_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq: Option<String>,
    /// Management API of that broker.
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    management_url: String,
    /// Live demo against the Kafka cluster at these bootstrap servers.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9092", conflicts_with = "rabbitmq")]
    kafka: Option<String>,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    if let Some(bootstrap) = &a.kafka {
        return Ok(crate::demo::kafka::demo(bootstrap)?);
    }
    if let Some(uri) = &a.rabbitmq {
        return Ok(crate::demo::rabbitmq::demo(uri, &a.management_url)?);
    }
    let (seed, hours) = (a.seed, a.hours);
    let dir = std::env::temp_dir().join(format!("mqwatch-demo-{}", std::process::id()));
    let opts = GenOptions {
        scenario: "payments".into(),
        hours,
        seed,
        start_ms: DEFAULT_START_MS,
        scrape_s: None,
    };
    eprintln!(
        "generating {hours} h of payment queue metrics (seed {seed}) in {}",
        dir.display()
    );
    let (events, _, summary) = write_scenario(&opts, &dir, false)?;
    let labels = LabelFile::load(&dir.join("labels.json"))?;
    eprintln!("replaying {} events through the engine\n", summary.events);
    let learned = Learned {
        models: s.models.load()?,
        features: None,
    };
    let stop = Some(s.stop.clone());
    let (report, run) = scored_replay(s.config(None)?, &[events], &labels, None, learned, stop)?;
    for a in &run.alerts {
        println!("{}", describe(a));
    }
    println!("\n{}", report.to_table());
    print_summary(&run);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn describe(a: &Alert) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(a.ts / 1000).map_or_else(
        |_| a.ts.to_string(),
        |t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
    );
    let state = match a.state {
        AlertState::Firing => "FIRING  ",
        AlertState::Resolved => "resolved",
    };
    format!(
        "{t} {state} {:?} {:<14} {}",
        a.severity,
        a.kind.as_str(),
        a.summary
    )
}
