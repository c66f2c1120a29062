//! Ctrl-C and SIGTERM, handled the same way in every mode: the first raises the run's stop flag
//! (sources stop, the pipeline drains, sinks get `engine.shutdown_timeout` to deliver, the summary
//! is printed, exit 0); a second one exits at once (130).
//!
//! The handlers are installed before this returns, so a signal can never find the process
//! without them — including SIGINT in a job started in the background by a script, which the
//! shell would otherwise have set to be ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn stop_on_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupt, mut terminate) = {
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("mqwatch-signals".into())
        .spawn(move || {
            rt.block_on(async {
                let mut first = true;
                loop {
                    let name = tokio::select! {
                        _ = interrupt.recv() => "interrupt",
                        _ = terminate.recv() => "terminate",
                    };
                    if !first {
                        eprintln!("mqwatch: second {name} signal: exiting at once");
                        std::process::exit(130);
                    }
                    first = false;
                    eprintln!(
                        "mqwatch: {name} signal: stopping — draining the pipeline and delivering waiting alerts (again to exit at once)"
                    );
                    stop.store(true, Ordering::Relaxed);
                }
            })
        })?;
    Ok(())
}
