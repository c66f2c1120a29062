//! A RabbitMQ workload (publisher and consumers on a queue), an independent alert subscriber, and
//! the live demo that joins them to the engine: steady traffic, then the consumers vanish, then
//! they come back, while the subscriber prints what risk teams would receive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alert::{Alert, AlertState};
use crate::config::Config;
use crate::link::BrokerError;
use crate::rabbitmq::{connect, RabbitConfig};
use crate::run::live;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// How a consumer treats what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerMode {
    /// Acknowledges each message after a short processing time.
    Ack,
    /// Takes its prefetch and never acknowledges: stuck on a poison message or a lock.
    Hold,
}

struct Consumer {
    channel: Channel,
    task: JoinHandle<()>,
}

/// Publishers and consumers on one queue at a steady rate.
pub struct Workload {
    conn: Connection,
    queue: String,
    publishing: Arc<AtomicBool>,
    publisher: JoinHandle<()>,
    consumers: Vec<Consumer>,
}

impl Workload {
    /// Declares (and empties) `queue` and starts publishing `rate` messages per second into it.
    pub async fn start(uri: &str, queue: &str, rate: f64) -> Result<Workload, BrokerError> {
        let conn = connect(uri, "mqwatch-workload").await?;
        let ch = conn.create_channel().await.map_err(err)?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
        ch.queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .map_err(err)?;
        let publishing = Arc::new(AtomicBool::new(true));
        let on = publishing.clone();
        let q = queue.to_string();
        let publisher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            while on.load(Ordering::Relaxed) {
                tick.tick().await;
                let body = b"{\"payment\":\"authorize\"}";
                if ch
                    .basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Workload {
            conn,
            queue: queue.into(),
            publishing,
            publisher,
            consumers: Vec::new(),
        })
    }

    pub async fn add_consumers(
        &mut self,
        n: usize,
        mode: ConsumerMode,
        prefetch: u16,
    ) -> Result<(), BrokerError> {
        for _ in 0..n {
            let ch = self.conn.create_channel().await.map_err(err)?;
            ch.basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(err)?;
            let mut deliveries = ch
                .basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(err)?;
            let task = tokio::spawn(async move {
                while let Some(Ok(d)) = deliveries.next().await {
                    if mode == ConsumerMode::Ack {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        if d.ack(BasicAckOptions::default()).await.is_err() {
                            return;
                        }
                    }
                }
            });
            self.consumers.push(Consumer { channel: ch, task });
        }
        Ok(())
    }

    /// Every consumer goes away; held messages return to the queue.
    pub async fn remove_consumers(&mut self) {
        for c in self.consumers.drain(..) {
            c.task.abort();
            let _ = c.channel.close(200, "consumer gone".into()).await;
        }
    }

    pub async fn stop(mut self) {
        self.publishing.store(false, Ordering::Relaxed);
        self.remove_consumers().await;
        self.publisher.abort();
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// An independent subscriber: its own connection and exclusive queue, bound to the alert
/// exchange with `binding` (for example `*.consumer_stall.#`). Yields each alert with its routing key.
pub async fn subscribe(
    uri: &str,
    exchange: &str,
    binding: &str,
) -> Result<(Connection, mpsc::UnboundedReceiver<(String, Alert)>), BrokerError> {
    let conn = connect(uri, "mqwatch-subscriber").await?;
    let ch = conn.create_channel().await.map_err(err)?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(err)?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .map_err(err)?;
    let name = q.name().to_string();
    ch.queue_bind(
        name.as_str().into(),
        exchange.into(),
        binding.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(err)?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut deliveries = ch
        .basic_consume(
            name.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = ch;
        while let Some(Ok(d)) = deliveries.next().await {
            if let Ok(a) = serde_json::from_slice::<Alert>(&d.data) {
                if tx.send((d.routing_key.to_string(), a)).is_err() {
                    return;
                }
            }
        }
    });
    Ok((conn, rx))
}

/// The engine watching `rabbit`, with alerts to its exchange, running until `stop`.
pub fn start_engine(
    config: Config,
    rabbit: RabbitConfig,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    let mut config = embedded(config);
    config.rabbitmq = vec![rabbit];
    config.stdout = false;
    Ok(std::thread::spawn(move || {
        if let Err(e) = live(Arc::new(config), None, stop) {
            tracing::error!(error = %e, "engine stopped");
        }
    }))
}

/// Settings for a short demonstration: 5 s intervals and 2 s polls, so that a stall shows within
/// half a minute and resolves within one.
pub fn demo_config() -> Config {
    let mut c = Config::default();
    c.engine.interval = Duration::from_secs(5);
    c.engine.lateness = Duration::from_secs(2);
    c.detectors.stall.no_consumers_after = Duration::from_secs(10);
    c.detectors.alerts.resolve_after_intervals = 3;
    c
}

/// An engine embedded in a demo or a test serves HTTP on a free port, unless its config names
/// one (several may run at once, and 9464 may be taken), and keeps its silences in memory.
pub fn embedded(mut config: Config) -> Config {
    if config.http.listen == crate::config::HttpConfig::default().listen {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        config.http.listen = free.map_or("127.0.0.1:0".into(), |a| a.to_string());
    }
    config.http.silences_file = String::new();
    // Each demonstration starts afresh: it keeps no state to resume from.
    config.state.dir = String::new();
    config
}

/// The live demo: a `risk.scoring` queue at a steady rate, then its consumers cancelled, then
/// restored; prints alerts as a subscriber bound to `*.consumer_stall.#` receives them.
pub fn demo(uri: &str, management_url: &str) -> Result<(), BrokerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(err)?;
    rt.block_on(async {
        let queue = "risk.scoring";
        let rabbit = RabbitConfig {
            uri: uri.into(),
            management_url: management_url.into(),
            include: vec![format!("^{}$", regex::escape(queue))],
            poll_interval: Duration::from_secs(2),
            ..Default::default()
        };
        let started = Instant::now();
        let say = |m: &str| println!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64());
        let (_sub_conn, mut alerts) =
            subscribe(uri, &rabbit.alerts_exchange, "*.consumer_stall.#").await?;
        say(&format!(
            "subscriber bound to {} with *.consumer_stall.#",
            rabbit.alerts_exchange
        ));
        let mut work = Workload::start(uri, queue, 50.0).await?;
        work.add_consumers(3, ConsumerMode::Ack, 20).await?;
        say("workload: 50 msg/s into risk.scoring, 3 consumers acking");
        let stop = Arc::new(AtomicBool::new(false));
        let config = embedded(demo_config());
        say(&format!(
            "dashboard, API and /metrics on {}/",
            config.http.external_base()
        ));
        let engine = start_engine(config, rabbit, stop.clone())?;
        say("mqwatch polling the management API every 2 s");
        tokio::time::sleep(Duration::from_secs(30)).await;
        say("steady traffic for 30 s; now cancelling every consumer");
        work.remove_consumers().await;
        let stalled_at = Instant::now();
        let fired = wait_for(
            &mut alerts,
            AlertState::Firing,
            Duration::from_secs(90),
            &say,
        )
        .await;
        if fired {
            say(&format!(
                "stall received {:.0} s after the consumers left; restoring them",
                stalled_at.elapsed().as_secs_f64()
            ));
        }
        work.add_consumers(3, ConsumerMode::Ack, 20).await?;
        let resolved = fired
            && wait_for(
                &mut alerts,
                AlertState::Resolved,
                Duration::from_secs(120),
                &say,
            )
            .await;
        stop.store(true, Ordering::Relaxed);
        work.stop().await;
        tokio::task::spawn_blocking(move || engine.join())
            .await
            .map_err(err)?
            .map_err(|_| "engine panicked")?;
        match (fired, resolved) {
            (true, true) => Ok(()),
            (false, _) => Err("no consumer_stall alert reached the subscriber within 90 s".into()),
            (true, false) => Err("the stall did not resolve within 120 s".into()),
        }
    })
}

async fn wait_for(
    alerts: &mut mpsc::UnboundedReceiver<(String, Alert)>,
    state: AlertState,
    limit: Duration,
    say: &impl Fn(&str),
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some((key, a))) = tokio::time::timeout_at(deadline, alerts.recv()).await {
        say(&format!(
            "subscriber got {key}: {:?} {}",
            a.state, a.summary
        ));
        if a.state == state {
            return true;
        }
    }
    false
}
