//! A bounded spool in front of a broker: alerts wait in it until the broker has confirmed them.
//!
//! [`SpoolSink`] runs one delivery thread with its own small async runtime. The thread connects
//! at once — so the alert exchange or topic exists before the first alert, and a wrong password is
//! reported at startup, through the sink's [`Link`] — and again, with backoff, after any failure.
//! It publishes the oldest alerts in order and drops them from the spool only once the broker
//! confirmed them, so a lost connection or a restarted broker delays alerts but never loses one; a
//! replay after reconnecting may deliver an alert twice, and subscribers deduplicate on its id.
//! When the spool is full, `send` waits: backpressure reaches the workers rather than dropping
//! anything. [`Sink::close`] gives delivery a deadline: what is still unconfirmed then is handed
//! back, so shutdown can name it and never hangs on a broker that is down.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Sink, SinkError};
use crate::alert::Alert;
use crate::link::{Backoff, BrokerError, Link};
use crate::telemetry::emit;
use crate::telemetry::events::{AlertUndelivered, AlertsConfirmed};

/// Alerts published per round trip of confirms.
const BATCH: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a sink dropped without [`Sink::close`] may still deliver.
const DROP_DEADLINE: Duration = Duration::from_secs(5);

/// A broker connection that can publish alerts with confirmation.
pub trait Publisher: Send + 'static {
    /// Connects, or reconnects after a failure, and declares what it publishes to.
    fn connect(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Publishes the alerts in order and returns once the broker confirmed every one of them.
    fn publish(&mut self, alerts: &[Alert])
        -> impl Future<Output = Result<(), BrokerError>> + Send;
}

enum Cmd {
    /// An alert, and whether it counts among those handed by `send` (a resend does not).
    Alert(Box<Alert>, bool),
    Flush(std::sync::mpsc::SyncSender<()>),
}

pub struct SpoolSink {
    name: String,
    tx: Option<mpsc::Sender<Cmd>>,
    /// Set by [`Sink::close`]: deliver until then. A channel of its own, so that closing never
    /// waits for room in a full spool.
    close: tokio::sync::watch::Sender<Option<Instant>>,
    /// Alerts waiting for confirmation, readable while it runs.
    spooled: Arc<AtomicU64>,
    /// Alerts handed by `send` that the broker has confirmed, in the order they were handed.
    confirmed: Arc<AtomicU64>,
    link: Arc<Link>,
    thread: Option<JoinHandle<Vec<Alert>>>,
}

impl SpoolSink {
    /// Starts the delivery thread, which connects at once. `link` names the broker in the log.
    pub fn start<P: Publisher>(
        name: &str,
        link: Arc<Link>,
        publisher: P,
        capacity: usize,
    ) -> SpoolSink {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (close, deadline) = tokio::sync::watch::channel(None);
        let spooled = Arc::new(AtomicU64::new(0));
        let confirmed = Arc::new(AtomicU64::new(0));
        let delivery = Delivery {
            name: name.to_string(),
            publisher,
            rx,
            deadline,
            capacity: capacity.max(1),
            spooled: spooled.clone(),
            confirmed: confirmed.clone(),
            link: link.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("mqwatch-sink-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(delivery.run())
            })
            .expect("spawn sink thread");
        SpoolSink {
            name: name.into(),
            tx: Some(tx),
            close,
            spooled,
            confirmed,
            link,
            thread: Some(thread),
        }
    }

    /// Alerts waiting for the broker's confirmation.
    pub fn spooled(&self) -> u64 {
        self.spooled.load(Ordering::Relaxed)
    }

    /// Delivers an alert again (an Alertmanager's periodic resend): it does not count among the
    /// alerts handed by `send` that [`Sink::confirmed`] counts.
    pub fn resend(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.closed())?;
        tx.blocking_send(Cmd::Alert(Box::new(alert.clone()), false))
            .map_err(|_| self.closed())
    }

    /// Waits until every alert sent so far is confirmed, for at most `within`.
    pub fn flush(&mut self, within: Duration) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.closed())?;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        tx.blocking_send(Cmd::Flush(done_tx))
            .map_err(|_| self.closed())?;
        done_rx.recv_timeout(within).map_err(|_| SinkError::Broker {
            sink: self.name.clone(),
            message: format!(
                "{} alerts still unconfirmed after {within:?}",
                self.spooled()
            ),
        })
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
        tx.blocking_send(Cmd::Alert(Box::new(alert.clone()), true))
            .map_err(|_| self.closed())
    }

    fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    fn waiting(&self) -> Option<u64> {
        Some(self.spooled())
    }

    fn link(&self) -> Option<Arc<Link>> {
        Some(self.link.clone())
    }

    fn summary(&self) -> Option<String> {
        let r = crate::telemetry::registry();
        Some(format!(
            "{}: {} alerts confirmed, {} unroutable, {} failed attempts",
            self.name,
            r.get("alerts_confirmed", &self.name),
            r.get("alerts_unroutable", &self.name),
            r.get("broker_failures", self.link.name())
        ))
    }

    fn close(&mut self, deadline: Instant) -> Result<Vec<Alert>, SinkError> {
        self.close.send_replace(Some(deadline));
        drop(self.tx.take());
        let thread = self.thread.take().ok_or_else(|| self.closed())?;
        thread.join().map_err(|_| self.closed())
    }
}

impl Drop for SpoolSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Whatever could not be confirmed is said out loud, alert by alert, never dropped silently.
            for a in self
                .close(Instant::now() + DROP_DEADLINE)
                .unwrap_or_default()
            {
                emit(AlertUndelivered {
                    sink: &self.name,
                    id: &a.id,
                });
            }
        }
    }
}

/// The delivery thread's state.
struct Delivery<P> {
    name: String,
    publisher: P,
    rx: mpsc::Receiver<Cmd>,
    deadline: tokio::sync::watch::Receiver<Option<Instant>>,
    capacity: usize,
    spooled: Arc<AtomicU64>,
    confirmed: Arc<AtomicU64>,
    link: Arc<Link>,
}

/// Alerts taken from the channel (and, for each, whether `send` handed it), and whether more can
/// come.
struct Intake {
    spool: VecDeque<Alert>,
    counted: VecDeque<bool>,
    waiting: Vec<std::sync::mpsc::SyncSender<()>>,
    open: bool,
}

impl Intake {
    fn take(&mut self, cmd: Option<Cmd>) {
        match cmd {
            Some(Cmd::Alert(a, counted)) => {
                self.spool.push_back(*a);
                self.counted.push_back(counted);
            }
            Some(Cmd::Flush(w)) => self.waiting.push(w),
            None => self.open = false,
        }
    }
}

/// The close deadline, once there is one (marked seen, so that `changed` waits for the next).
fn deadline_of(rx: &mut tokio::sync::watch::Receiver<Option<Instant>>) -> Option<Instant> {
    *rx.borrow_and_update()
}

/// Runs `f` to completion, or until the close deadline passes (then `None`). A deadline set
/// while `f` runs counts too, so a connect attempt that hangs cannot hold up shutdown; with
/// `idle` (nothing waits to be delivered) closing abandons `f` at once.
async fn bounded<F: Future>(
    deadline: &mut tokio::sync::watch::Receiver<Option<Instant>>,
    idle: bool,
    f: F,
) -> Option<F::Output> {
    tokio::pin!(f);
    loop {
        if let Some(d) = deadline_of(deadline) {
            if idle {
                return None;
            }
            return tokio::time::timeout_at(d.into(), &mut f).await.ok();
        }
        tokio::select! {
            out = &mut f => return Some(out),
            changed = deadline.changed() => if changed.is_err() {
                return tokio::time::timeout(DROP_DEADLINE, &mut f).await.ok();
            },
        }
    }
}

impl<P: Publisher> Delivery<P> {
    async fn run(self) -> Vec<Alert> {
        let Delivery {
            name,
            mut publisher,
            mut rx,
            mut deadline,
            capacity,
            spooled,
            confirmed,
            link,
        } = self;
        let mut intake = Intake {
            spool: VecDeque::new(),
            counted: VecDeque::new(),
            waiting: Vec::new(),
            open: true,
        };
        let mut connected = false;
        let mut backoff = Backoff::new(MAX_BACKOFF);
        // Hands back the spool and whatever still waits in the channel.
        let give_up = |mut intake: Intake, mut rx: mpsc::Receiver<Cmd>| {
            rx.close();
            while let Ok(cmd) = rx.try_recv() {
                intake.take(Some(cmd));
            }
            Vec::from(intake.spool)
        };
        loop {
            while intake.open && intake.spool.len() < capacity {
                match rx.try_recv() {
                    Ok(cmd) => intake.take(Some(cmd)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => intake.take(None),
                }
            }
            spooled.store(intake.spool.len() as u64, Ordering::Relaxed);
            if intake.spool.is_empty() {
                intake.waiting.drain(..).for_each(|w| {
                    let _ = w.try_send(());
                });
                if !intake.open {
                    return Vec::new();
                }
            }
            if deadline_of(&mut deadline).is_some_and(|d| Instant::now() >= d) {
                return give_up(intake, rx);
            }
            if !connected {
                let idle = intake.spool.is_empty();
                match bounded(&mut deadline, idle, publisher.connect()).await {
                    None => return give_up(intake, rx),
                    Some(Ok(())) => {
                        connected = true;
                        backoff.reset();
                        link.up();
                    }
                    Some(Err(e)) => {
                        link.down(&e);
                        let delay = backoff.next_delay();
                        pause(delay, &mut rx, &mut deadline, &mut intake, capacity).await;
                    }
                }
                continue;
            }
            if intake.spool.is_empty() {
                let cmd = rx.recv().await;
                intake.take(cmd);
                continue;
            }
            let n = intake.spool.len().min(BATCH);
            let batch = &intake.spool.make_contiguous()[..n];
            match bounded(&mut deadline, false, publisher.publish(batch)).await {
                None => return give_up(intake, rx),
                Some(Ok(())) => {
                    intake.spool.drain(..n);
                    let handed = intake.counted.drain(..n).filter(|&c| c).count();
                    confirmed.fetch_add(handed as u64, Ordering::Relaxed);
                    emit(AlertsConfirmed {
                        sink: &name,
                        count: n as u64,
                    });
                }
                Some(Err(e)) => {
                    connected = false;
                    link.down(&e);
                    let delay = backoff.next_delay();
                    pause(delay, &mut rx, &mut deadline, &mut intake, capacity).await;
                }
            }
        }
    }
}

/// Waits before the next attempt, taking commands meanwhile while there is room, and wakes
/// early when the run starts closing.
async fn pause(
    delay: Duration,
    rx: &mut mpsc::Receiver<Cmd>,
    deadline: &mut tokio::sync::watch::Receiver<Option<Instant>>,
    intake: &mut Intake,
    capacity: usize,
) {
    let wake = Instant::now() + delay;
    let wake = deadline_of(deadline).map_or(wake, |d| d.min(wake));
    let sleep = tokio::time::sleep_until(wake.into());
    tokio::pin!(sleep);
    loop {
        let room = intake.open && intake.spool.len() < capacity;
        tokio::select! {
            _ = &mut sleep => return,
            cmd = rx.recv(), if room => intake.take(cmd),
            _ = deadline.changed() => return,
        }
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
        async fn connect(&mut self) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn publish(&mut self, alerts: &[Alert]) -> Result<(), BrokerError> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
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
        Alert {
            id: format!("a{i}"),
            ts: i as i64,
            started_at: i as i64,
            ..Alert::example()
        }
    }

    #[test]
    fn failed_publishes_are_retried_in_order_until_confirmed() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink = SpoolSink::start(
            "flaky",
            Link::new("flaky publisher"),
            Flaky {
                calls: 0,
                got: got.clone(),
            },
            8,
        );
        for i in 0..500 {
            sink.send(&alert(i)).unwrap();
        }
        sink.flush(Duration::from_secs(10)).unwrap();
        let undelivered = sink.close(Instant::now() + Duration::from_secs(1)).unwrap();
        assert!(undelivered.is_empty());
        let got = got.lock().unwrap();
        let want: Vec<String> = (0..500).map(|i| format!("a{i}")).collect();
        assert_eq!(*got, want);
        let r = crate::telemetry::registry();
        assert_eq!(r.get("alerts_confirmed", "flaky"), 500);
        assert!(r.get("broker_failures", "flaky publisher") > 0);
    }

    /// A broker that never answers: the wrong password of a live run.
    struct Refusing;

    impl Publisher for Refusing {
        async fn connect(&mut self) -> Result<(), BrokerError> {
            Err("ACCESS_REFUSED".into())
        }
        async fn publish(&mut self, _: &[Alert]) -> Result<(), BrokerError> {
            unreachable!("never connected")
        }
    }

    #[test]
    fn closing_gives_up_at_the_deadline_and_hands_back_what_was_not_delivered() {
        let link = Link::new("refusing");
        let mut sink = SpoolSink::start("refusing", link.clone(), Refusing, 8);
        for i in 0..3 {
            sink.send(&alert(i)).unwrap();
        }
        assert!(sink.flush(Duration::from_millis(300)).is_err());
        let started = Instant::now();
        let left = sink.close(started + Duration::from_millis(500)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "close overran its deadline"
        );
        let ids: Vec<&str> = left.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a0", "a1", "a2"]);
        assert!(crate::telemetry::registry().get("broker_failures", "refusing") > 0);
        assert!(!link.reached());
    }

    #[test]
    fn the_sink_connects_before_the_first_alert() {
        let link = Link::new("flaky");
        let mut sink = SpoolSink::start(
            "flaky",
            link.clone(),
            Flaky {
                calls: 0,
                got: Arc::default(),
            },
            8,
        );
        let t = Instant::now();
        while !link.reached() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(link.reached(), "no connection without an alert");
        assert!(sink.close(Instant::now()).unwrap().is_empty());
    }
}
