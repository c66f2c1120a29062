//! A bounded spool in front of a broker: alerts wait in it until the broker has confirmed them.
//!
//! [`SpoolSink`] runs one delivery thread with its own small async runtime. The thread connects
//! (again, with backoff, after any failure), publishes the oldest alerts in order and drops them
//! from the spool only once the broker confirmed them, so a lost connection or a restarted broker
//! delays alerts but never loses one; a replay after reconnecting may deliver an alert twice, and
//! subscribers deduplicate on its id. When the spool is full, `send` waits: backpressure reaches
//! the workers rather than dropping anything.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Sink, SinkError};
use crate::alert::Alert;

/// Alerts published per round trip of confirms.
const BATCH: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A broker connection that can publish alerts with confirmation.
pub trait Publisher: Send + 'static {
    /// Connects, or reconnects after a failure, and declares what it publishes to.
    fn connect(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Publishes the alerts in order and returns once the broker confirmed every one of them.
    fn publish(&mut self, alerts: &[Alert]) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a spool has done, readable while it runs.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub confirmed: AtomicU64,
    pub failures: AtomicU64,
    pub spooled: AtomicU64,
}

enum Cmd {
    Alert(Box<Alert>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

pub struct SpoolSink {
    name: String,
    tx: Option<mpsc::Sender<Cmd>>,
    stats: Arc<SpoolStats>,
    thread: Option<JoinHandle<Vec<Alert>>>,
    flush_timeout: Duration,
}

impl SpoolSink {
    pub fn start<P: Publisher>(
        name: &str,
        publisher: P,
        capacity: usize,
        flush_timeout: Duration,
    ) -> SpoolSink {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(SpoolStats::default());
        let st = stats.clone();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("mqwatch-sink-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(deliver(label, publisher, rx, capacity.max(1), st))
            })
            .expect("spawn sink thread");
        SpoolSink {
            name: name.into(),
            tx: Some(tx),
            stats,
            thread: Some(thread),
            flush_timeout,
        }
    }

    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    fn closed(&self) -> SinkError {
        SinkError::Broker {
            sink: self.name.clone(),
            message: "delivery thread stopped".into(),
        }
    }
}

impl Sink for SpoolSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.closed())?;
        tx.blocking_send(Cmd::Alert(Box::new(alert.clone())))
            .map_err(|_| self.closed())
    }

    /// Waits until every alert sent so far is confirmed, or the flush timeout passes.
    fn flush(&mut self) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.closed())?;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        tx.blocking_send(Cmd::Flush(done_tx))
            .map_err(|_| self.closed())?;
        done_rx
            .recv_timeout(self.flush_timeout)
            .map_err(|_| SinkError::Broker {
                sink: self.name.clone(),
                message: format!(
                    "{} alerts still unconfirmed after {:?}",
                    self.stats.spooled.load(Ordering::Relaxed),
                    self.flush_timeout
                ),
            })
    }
}

impl Drop for SpoolSink {
    fn drop(&mut self) {
        let _ = self.flush();
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            // Whatever could not be confirmed is said out loud, alert by alert, never dropped silently.
            for a in t.join().unwrap_or_default() {
                tracing::error!(sink = %self.name, id = %a.id, alert = %a.to_json(), "alert not delivered");
            }
        }
    }
}

async fn deliver<P: Publisher>(
    name: String,
    mut publisher: P,
    mut rx: mpsc::Receiver<Cmd>,
    capacity: usize,
    stats: Arc<SpoolStats>,
) -> Vec<Alert> {
    let mut spool: VecDeque<Alert> = VecDeque::new();
    let mut waiting: Vec<std::sync::mpsc::SyncSender<()>> = Vec::new();
    let mut connected = false;
    let mut backoff = FIRST_BACKOFF;
    let mut open = true;
    loop {
        while open && spool.len() < capacity {
            match rx.try_recv() {
                Ok(cmd) => take(cmd, &mut spool, &mut waiting),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        stats.spooled.store(spool.len() as u64, Ordering::Relaxed);
        if spool.is_empty() {
            waiting.drain(..).for_each(|w| {
                let _ = w.send(());
            });
            if !open {
                return Vec::new();
            }
            match rx.recv().await {
                Some(cmd) => take(cmd, &mut spool, &mut waiting),
                None => open = false,
            }
            continue;
        }
        if !open && waiting.is_empty() && !connected {
            // Shutting down and the broker is gone: hand back what could not be delivered.
            return spool.into();
        }
        if !connected {
            match publisher.connect().await {
                Ok(()) => {
                    connected = true;
                    backoff = FIRST_BACKOFF;
                    tracing::info!(sink = %name, "connected");
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sink = %name, error = %e, spooled = spool.len(), "cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let n = spool.len().min(BATCH);
        match publisher.publish(&spool.make_contiguous()[..n]).await {
            Ok(()) => {
                spool.drain(..n);
                stats.confirmed.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                connected = false;
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %name, error = %e, spooled = spool.len(), "publish failed; will reconnect");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn take(cmd: Cmd, spool: &mut VecDeque<Alert>, waiting: &mut Vec<std::sync::mpsc::SyncSender<()>>) {
    match cmd {
        Cmd::Alert(a) => spool.push_back(*a),
        Cmd::Flush(w) => waiting.push(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A publisher that fails every third call, to show the spool retries without losing or
    /// reordering anything. (The real brokers are exercised in tests/.)
    struct Flaky {
        calls: usize,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl Publisher for Flaky {
        async fn connect(&mut self) -> Result<(), String> {
            Ok(())
        }
        async fn publish(&mut self, alerts: &[Alert]) -> Result<(), String> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err("connection reset".into());
            }
            self.got
                .lock()
                .unwrap()
                .extend(alerts.iter().map(|a| a.id.clone()));
            Ok(())
        }
    }

    fn alert(i: usize) -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": format!("a{i}"), "state": "firing", "kind": "latency", "severity": "warning",
            "labels": {}, "ts": i, "started_at": i, "resolved_at": null, "metric": "p99",
            "observed": 1.0, "expected": 1.0, "score": 1.0, "detector": "d", "summary": "s"
        }))
        .unwrap()
    }

    #[test]
    fn failed_publishes_are_retried_in_order_until_confirmed() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink = SpoolSink::start(
            "flaky",
            Flaky {
                calls: 0,
                got: got.clone(),
            },
            8,
            Duration::from_secs(10),
        );
        for i in 0..500 {
            sink.send(&alert(i)).unwrap();
        }
        sink.flush().unwrap();
        let stats = sink.stats();
        drop(sink);
        let got = got.lock().unwrap();
        let want: Vec<String> = (0..500).map(|i| format!("a{i}")).collect();
        assert_eq!(*got, want);
        assert_eq!(stats.confirmed.load(Ordering::Relaxed), 500);
        assert!(stats.failures.load(Ordering::Relaxed) > 0);
    }
}
