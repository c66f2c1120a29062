//! The `mqwatch` command: parse arguments, pick the command, map its error to an exit code
//! (0 ok, 1 runtime failure, 2 usage or config error). What each command does is in `mqwatch::cmd`.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use mqwatch::cmd::{self, ModelArgs, Session};
use mqwatch::redact::Redactor;

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

#[derive(Subcommand)]
enum Command {
    Replay(cmd::replay::Args),
    Eval(cmd::eval::Args),
    Train(cmd::train::Args),
    Gen(cmd::gen::Args),
    Nab(cmd::nab::Args),
    Run(cmd::run::Args),
    Demo(cmd::demo::Args),
}

fn main() -> ExitCode {
    let Cli { command, models } = Cli::parse();
    let session = Session {
        redactor: Redactor::default(),
        stop: Arc::new(AtomicBool::new(false)),
        models,
    };
    tracing_subscriber::fmt()
        .with_writer(session.redactor.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            // The client libraries log every failed connection attempt; mqwatch's own lines say
            // what is wrong with each broker, once (`mqwatch::link`). MQWATCH_LOG=info shows theirs.
            tracing_subscriber::EnvFilter::try_from_env("MQWATCH_LOG")
                .unwrap_or_else(|_| "info,librdkafka=off,rdkafka::client=off,lapin=off".into()),
        )
        .init();
    if let Err(e) = mqwatch::shutdown::stop_on_signals(session.stop.clone()) {
        eprintln!("mqwatch: cannot handle signals: {e}");
        return ExitCode::from(1);
    }
    let result = match command {
        Command::Replay(a) => cmd::replay::run(&session, a),
        Command::Eval(a) => cmd::eval::run(&session, a),
        Command::Train(a) => cmd::train::run(&session, a),
        Command::Gen(a) => cmd::gen::run(&session, a),
        Command::Nab(a) => cmd::nab::run(&session, a),
        Command::Run(a) => cmd::run::run(&session, a),
        Command::Demo(a) => cmd::demo::run(&session, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqwatch: {}", session.redactor.scrub(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
