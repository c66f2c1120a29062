//! The `mqwatch` command: parse arguments, load config, call the library, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 usage or config error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use mqwatch::alert::{Alert, AlertState};
use mqwatch::config::Config;
use mqwatch::dataset::eval::{evaluate, EvalReport};
use mqwatch::dataset::gen::{generate, GenOptions, DEFAULT_START_MS};
use mqwatch::dataset::labels::LabelFile;
use mqwatch::learn::ModelSet;
use mqwatch::pipeline::Learned;
use mqwatch::redact::Redactor;
use mqwatch::run::{replay, ReplayOptions, ReplayReport};
use mqwatch::sink::{JsonlSink, Sink};
use mqwatch::source::OnError;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "mqwatch",
    version,
    about = "Streaming anomaly detection for the message queues of payment systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    models: ModelArgs,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Directory of learned models to score with [default: ./models, when it exists].
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Statistical detectors only: load no learned model.
    #[arg(long, global = true, conflicts_with = "models")]
    no_models: bool,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<Option<Arc<ModelSet>>> {
        let dir = match (&self.models, self.no_models) {
            (_, true) => return Ok(None),
            (Some(d), _) => d.clone(),
            (None, _) if Path::new("models").is_dir() => PathBuf::from("models"),
            (None, _) => return Ok(None),
        };
        let set = ModelSet::load_dir(&dir).map_err(|e| UsageError(e.to_string()))?;
        for (class, path) in &set.sources {
            eprintln!(
                "learned baseline for {}: {}",
                class.as_str(),
                path.display()
            );
        }
        Ok((!set.is_empty()).then(|| Arc::new(set)))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Replay metric event files (JSONL, .gz, or a JSON array) in event time, as fast as possible.
    /// Alerts go to stdout as JSONL; a summary goes to stderr.
    Replay {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop at the first refused input instead of counting it and going on.
        #[arg(long)]
        strict: bool,
        /// Also write the alerts to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not print alerts on stdout (the summary still goes to stderr).
        #[arg(long)]
        quiet: bool,
    },
    /// Replay events and score the alerts against labelled incidents.
    Eval {
        #[arg(long, required = true, num_args = 1..)]
        events: Vec<PathBuf>,
        #[arg(long)]
        labels: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the alerts of the run to this file (JSONL).
        #[arg(long)]
        alerts_out: Option<PathBuf>,
        /// Write an HTML report with plots of every incident and false alert to DIR/index.html.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Fit learned baselines (one Gaussian mixture per entity class, with seasonal profiles) from
    /// history; intervals inside the labelled incidents are left out.
    Train {
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
    },
    /// Generate a labelled scenario: DIR/events.jsonl and DIR/labels.json.
    Gen {
        /// payments (every incident kind), quiet (traps only), or one incident kind:
        /// partition-stall, group-stop, latency-spike, latency-drift, backlog-growth,
        /// rabbit-consumers-gone, rabbit-unacked-stuck.
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
    },
    /// Score mqwatch's own detectors on the Numenta Anomaly Benchmark corpus (data/, labels/,
    /// results/final_results.json) and print them beside the published scoreboard.
    Nab {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Watch live brokers as the config says ([rabbitmq], [kafka]); alerts to stdout and the
    /// brokers' alert topics, until interrupted or --for elapses.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Stop after this long (e.g. 10m); default: until Ctrl-C.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Run a bundled six-hour payments scenario through the whole engine; print alerts and a
    /// scorecard. With --rabbitmq or --kafka, run a live workload on the local broker instead,
    /// inject a consumer stall and print the alerts as a subscriber receives them.
    Demo {
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
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// An error that is the user's to fix (exit 2) rather than a failure of the run (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// What every command shares: the redactor in front of stderr, and the stop flag that Ctrl-C and
/// SIGTERM raise.
struct Env {
    redactor: Redactor,
    stop: Arc<AtomicBool>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env {
        redactor: Redactor::default(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    tracing_subscriber::fmt()
        .with_writer(env.redactor.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            // The client libraries log every failed connection attempt; mqwatch's own lines say
            // what is wrong with each broker, once (`mqwatch::link`). MQWATCH_LOG=info shows theirs.
            tracing_subscriber::EnvFilter::try_from_env("MQWATCH_LOG")
                .unwrap_or_else(|_| "info,librdkafka=off,rdkafka::client=off,lapin=off".into()),
        )
        .init();
    if let Err(e) = mqwatch::shutdown::stop_on_signals(env.stop.clone()) {
        eprintln!("mqwatch: cannot handle signals: {e}");
        return ExitCode::from(1);
    }
    match run(cli, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqwatch: {}", env.redactor.scrub(&format!("{e:#}")));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

impl Env {
    /// Loads a config (or the defaults), first taking note of every secret in its text, so that
    /// none reaches the log even when the file does not parse.
    fn config(&self, path: Option<&Path>) -> anyhow::Result<Arc<Config>> {
        let config = match path {
            None => Config::default(),
            Some(p) => {
                if let Ok(text) = std::fs::read_to_string(p) {
                    self.redactor.add_from_config_text(&text);
                }
                Config::load(p).map_err(|e| UsageError(e.to_string()))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// Every input must exist and not be a directory (a pipe such as `/dev/stdin` is fine).
fn check_files(files: &[PathBuf]) -> anyhow::Result<()> {
    match files.iter().find(|f| !f.exists() || f.is_dir()) {
        Some(f) => Err(UsageError(format!("no such file: {}", f.display())).into()),
        None => Ok(()),
    }
}

fn run(cli: Cli, env: &Env) -> anyhow::Result<()> {
    let Cli { command, models } = cli;
    match command {
        Command::Replay {
            files,
            config,
            strict,
            out,
            quiet,
        } => {
            let models = models.load()?;
            let config = env.config(config.as_deref())?;
            check_files(&files)?;
            let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
            if !quiet {
                sinks.push(Box::new(JsonlSink::stdout_buffered()));
            }
            if let Some(p) = &out {
                sinks.push(Box::new(JsonlSink::file(p)?));
            }
            let on_error = if strict {
                OnError::Stop
            } else {
                OnError::Continue
            };
            let opts = ReplayOptions {
                on_error,
                progress: true,
                learned: Learned {
                    models,
                    features: None,
                },
                stop: Some(env.stop.clone()),
                ..Default::default()
            };
            let report = replay(config, &files, sinks, &opts)?;
            print_summary(&report);
            undelivered(&report.undelivered)
        }
        Command::Eval {
            events,
            labels,
            config,
            format,
            alerts_out,
            report: report_dir,
        } => {
            let models = models.load()?;
            let config = env.config(config.as_deref())?;
            check_files(&events)?;
            let labels = LabelFile::load(&labels).map_err(|e| UsageError(e.to_string()))?;
            // The report plots every entity's intervals: the workers send them as they judge.
            let (features, rows) = report_dir
                .is_some()
                .then(crossbeam_channel::unbounded)
                .unzip();
            let learned = Learned {
                models: models.clone(),
                features,
            };
            let (report, run) = eval(
                config.clone(),
                &events,
                &labels,
                alerts_out.as_deref(),
                learned,
                Some(env.stop.clone()),
            )?;
            if let (Some(dir), Some(rows)) = (report_dir, rows) {
                let rows: Vec<_> = rows.try_iter().collect();
                let title = format!("mqwatch evaluation: {}", events[0].display());
                let path = mqwatch::dataset::report::write_report(
                    &dir,
                    &title,
                    &report,
                    &run.alerts,
                    &rows,
                    models.as_deref(),
                )
                .with_context(|| format!("cannot write the report to {}", dir.display()))?;
                eprintln!("report: {}", path.display());
            }
            match format {
                Format::Table => print!("{}", report.to_table()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            print_summary(&run);
            Ok(())
        }
        Command::Train {
            events,
            labels,
            out,
            config,
            name,
            threshold_quantile,
        } => {
            if !(0.5..1.0).contains(&threshold_quantile) {
                return Err(UsageError("--threshold-quantile must be in [0.5, 1)".into()).into());
            }
            let config = env.config(config.as_deref())?;
            check_files(&events)?;
            let label_file = labels
                .as_deref()
                .map(LabelFile::load)
                .transpose()
                .map_err(|e| UsageError(e.to_string()))?;
            let opts = mqwatch::learn::TrainOptions {
                name: name.unwrap_or_else(|| {
                    out.file_stem()
                        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
                }),
                threshold_quantile,
                ..Default::default()
            };
            let (rows, span) = mqwatch::dataset::train::collect_rows(&config, &events)?;
            let with_labels = label_file.as_ref().zip(labels.as_deref());
            let model = mqwatch::dataset::train::train(&rows, span, with_labels, &events, &opts)?;
            model.save(&out)?;
            print!("{}", model_summary(&model));
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::Gen {
            scenario,
            hours,
            seed,
            out,
            gzip,
        } => {
            if !(hours > 0.0 && hours <= 24.0 * 31.0) {
                return Err(UsageError("--hours must be between 0 and 744".into()).into());
            }
            let opts = GenOptions {
                scenario,
                hours,
                seed,
                start_ms: DEFAULT_START_MS,
            };
            let (events, labels, summary) = write_scenario(&opts, &out, gzip)?;
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
        Command::Run { config, duration } => run_live(env, &config, duration, models.load()?),
        Command::Nab { corpus, config } => nab(env, &corpus, config.as_deref()),
        Command::Demo {
            kafka: Some(bootstrap),
            ..
        } => mqwatch::demo::kafka::demo(&bootstrap).map_err(anyhow::Error::msg),
        Command::Demo {
            rabbitmq: Some(uri),
            management_url,
            ..
        } => mqwatch::demo::rabbitmq::demo(&uri, &management_url).map_err(anyhow::Error::msg),
        Command::Demo { seed, hours, .. } => demo(env, seed, hours, models.load()?),
    }
}

fn nab(env: &Env, corpus: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = env.config(config)?;
    if !corpus.join("labels/combined_windows.json").is_file() {
        return Err(UsageError(format!(
            "{}: not a NAB corpus (no labels/combined_windows.json)",
            corpus.display()
        ))
        .into());
    }
    let ours = mqwatch::dataset::nab::score_corpus(corpus, &config).map_err(anyhow::Error::msg)?;
    let published: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>> =
        std::fs::read_to_string(corpus.join("results/final_results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let mut rows: Vec<(String, [f64; 3])> = published
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                mqwatch::dataset::nab::PROFILES.map(|p| s.get(p.name).copied().unwrap_or(f64::NAN)),
            )
        })
        .collect();
    rows.push((
        "mqwatch".into(),
        mqwatch::dataset::nab::PROFILES.map(|p| ours[p.name]),
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

fn run_live(
    env: &Env,
    config_path: &Path,
    duration: Option<std::time::Duration>,
    models: Option<Arc<ModelSet>>,
) -> anyhow::Result<()> {
    let config = env.config(Some(config_path))?;
    if config.rabbitmq.is_empty() && config.kafka.is_empty() {
        return Err(UsageError(format!(
            "{}: no live source configured (add a [rabbitmq] or [kafka] section)",
            config_path.display()
        ))
        .into());
    }
    if let Some(d) = duration {
        let timer = env.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            timer.store(true, Ordering::Relaxed);
        });
    }
    let report = mqwatch::run::live(config, models, env.stop.clone())?;
    for s in &report.sinks {
        eprintln!("{s}");
    }
    let failures: u64 = report.links.iter().map(|l| l.failures()).sum();
    let outages: u64 = report.links.iter().map(|l| l.outages()).sum();
    eprintln!(
        "{}; {} series, {} late; {} alert updates; {failures} failed broker attempts, {outages} lost connections; {:.0} s",
        report.input,
        report.workers.series,
        report.workers.late,
        report.alert_updates,
        report.elapsed.as_secs_f64()
    );
    undelivered(&report.undelivered)
}

/// Names every alert a sink could not deliver by the shutdown deadline; fails the run if any.
fn undelivered(per_sink: &[(String, Vec<Alert>)]) -> anyhow::Result<()> {
    let mut total = 0;
    for (sink, alerts) in per_sink {
        total += alerts.len();
        let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        eprintln!(
            "mqwatch: {} alerts not delivered to {sink} by the shutdown deadline: {}",
            alerts.len(),
            ids.join(" ")
        );
    }
    if total > 0 {
        anyhow::bail!("{total} alerts not delivered (ids above)");
    }
    Ok(())
}

fn write_scenario(
    opts: &GenOptions,
    dir: &Path,
    gzip: bool,
) -> anyhow::Result<(PathBuf, PathBuf, mqwatch::dataset::gen::GenSummary)> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let events = dir.join(if gzip {
        "events.jsonl.gz"
    } else {
        "events.jsonl"
    });
    let file = std::fs::File::create(&events)
        .with_context(|| format!("cannot create {}", events.display()))?;
    let mut w: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::best(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let (labels, summary) = generate(opts, &mut w).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => anyhow::Error::from(UsageError(e.to_string())),
        _ => anyhow::Error::from(e),
    })?;
    w.flush()?;
    drop(w);
    let labels_path = dir.join("labels.json");
    std::fs::write(&labels_path, serde_json::to_string_pretty(&labels)? + "\n")?;
    Ok((events, labels_path, summary))
}

fn eval(
    config: Arc<Config>,
    events: &[PathBuf],
    labels: &LabelFile,
    alerts_out: Option<&Path>,
    learned: Learned,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<(EvalReport, ReplayReport)> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(p) = alerts_out {
        sinks.push(Box::new(JsonlSink::file(p)?));
    }
    let opts = ReplayOptions {
        collect: true,
        progress: true,
        learned,
        stop,
        ..Default::default()
    };
    let run = replay(config, events, sinks, &opts)?;
    let span = match (labels.start, labels.end, run.input.span) {
        (Some(a), Some(b), _) => (a, b),
        (_, _, Some(s)) => s,
        _ => (0, 0),
    };
    Ok((evaluate(labels, &run.alerts, span), run))
}

fn print_summary(r: &ReplayReport) {
    for e in &r.errors {
        eprintln!("refused: {e}");
    }
    let shown = r.errors.len() as u64;
    if r.input.total_errors() > shown {
        eprintln!("refused: ... and {} more", r.input.total_errors() - shown);
    }
    if r.interrupted {
        eprintln!("interrupted: the summary covers the input read until then");
    }
    eprintln!(
        "{}; {} series ({} KiB of latency histograms), {} late; {} alert updates; {:.2} s, {:.0} events/s",
        r.input,
        r.workers.series,
        r.workers.histogram_bytes / 1024,
        r.workers.late,
        r.alert_updates,
        r.elapsed.as_secs_f64(),
        r.events_per_sec()
    );
}

fn demo(env: &Env, seed: u64, hours: f64, models: Option<Arc<ModelSet>>) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mqwatch-demo-{}", std::process::id()));
    let opts = GenOptions {
        scenario: "payments".into(),
        hours,
        seed,
        start_ms: DEFAULT_START_MS,
    };
    eprintln!(
        "generating {hours} h of payment queue metrics (seed {seed}) in {}",
        dir.display()
    );
    let (events, _, summary) = write_scenario(&opts, &dir, false)?;
    let labels = LabelFile::load(&dir.join("labels.json"))?;
    eprintln!("replaying {} events through the engine\n", summary.events);
    let learned = Learned {
        models,
        features: None,
    };
    let (report, run) = eval(
        env.config(None)?,
        &[events],
        &labels,
        None,
        learned,
        Some(env.stop.clone()),
    )?;
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

fn model_summary(m: &mqwatch::learn::ModelFile) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<13} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}\n",
        "class", "train", "excluded", "components", "threshold", "holdout", "incident"
    );
    for (class, c) in &m.classes {
        let e = &c.evaluation;
        let _ = writeln!(
            out,
            "{:<13} {:>9} {:>9} {:>10} {:>10.2} {:>8.2}% {:>9}",
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
        );
    }
    out
}
