//! `mqwatch run` as a new user meets it, against the real RabbitMQ (127.0.0.1:5672, management on
//! 15672) and Kafka broker (127.0.0.1:9092) that `.ci/services` starts: the alert exchange exists
//! before the first alert, stdout shows each alert as it fires, Ctrl-C and SIGTERM drain and exit
//! 0, a sink that cannot connect says so at startup and never holds up shutdown, unreachable
//! brokers fail the run, and no secret of any config, however malformed, reaches the output.
//!
//! Every test uses its own uniquely named queues and exchanges.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

mod common;
use common::live::Run;
use common::unique;

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn channel() -> (Connection, Channel) {
    let conn = mqwatch::rabbitmq::connect(URI, "mqwatch-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// A queue holding `ready` messages that nobody consumes: a consumer stall to be.
async fn abandoned_queue(name: &str, ready: usize) {
    let (conn, ch) = channel().await;
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..ready {
        ch.basic_publish(
            "".into(),
            name.into(),
            BasicPublishOptions::default(),
            b"{\"payment\":1}",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn exchange_exists(name: &str) -> bool {
    let (conn, ch) = channel().await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let ok = ch
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "done".into()).await;
    ok
}

async fn cleanup(queue: &str, exchange: &str) {
    let (conn, ch) = channel().await;
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// Settings that make a queue without consumers an alert within seconds.
fn quick_stall_config(queue: &str, exchange: &str, uri: &str, extra: &str) -> String {
    format!(
        r#"
[engine]
interval = "1s"
lateness = "500ms"
{extra}
[stall]
no_consumers_after = "2s"
[rabbitmq]
uri = "{uri}"
include = ["^{}$"]
poll_interval = "1s"
alerts_exchange = "{exchange}"
"#,
        regex::escape(queue).replace('\\', "\\\\")
    )
}

#[test]
fn the_alert_exchange_exists_at_startup_and_its_first_alert_reaches_a_queue_bound_then() {
    let rt = rt();
    let queue = unique("risk.first");
    let exchange = unique("mqwatch.alerts.first");
    rt.block_on(abandoned_queue(&queue, 5));
    let mut run = Run::start(
        &quick_stall_config(&queue, &exchange, URI, "shutdown_timeout = \"3s\""),
        &["--for", "5m"],
        &[],
    );

    // A risk team binds its queue to the exchange before anything has gone wrong.
    let t = Instant::now();
    while !rt.block_on(exchange_exists(&exchange)) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the alert exchange was not declared at startup:\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        run.lines.try_recv().is_err(),
        "an alert came before the test could bind"
    );
    let (conn, ch) = rt.block_on(channel());
    let mut deliveries = rt.block_on(async {
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q.name().as_str().into(),
            exchange.as_str().into(),
            "*.consumer_stall.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        ch.basic_consume(
            q.name().as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap()
    });

    // stdout shows the alert while the run goes on, not when it ends.
    let alert = run.next_alert(Duration::from_secs(60));
    assert!(run.running(), "the alert appeared only at exit");
    assert_eq!(alert["kind"], "consumer_stall");
    assert_eq!(alert["labels"]["queue"], queue.as_str());
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), deliveries.next()).await });
    let delivery = got
        .expect("the bound queue received no alert")
        .expect("consumer closed")
        .unwrap();
    let received: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(received["id"], alert["id"], "the first alert was lost");

    run.signal("INT");
    let (code, _, stderr) = run.exit_within(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("alert updates"), "no summary: {stderr}");
    let _ = rt.block_on(conn.close(200, "done".into()));
    rt.block_on(cleanup(&queue, &exchange));
}

#[test]
fn an_alert_no_queue_takes_is_logged_once_and_sigterm_drains_and_exits_0() {
    let rt = rt();
    let queue = unique("risk.unbound");
    let exchange = unique("mqwatch.alerts.unbound");
    rt.block_on(abandoned_queue(&queue, 5));
    // Also the way a script starts it: in the background, where SIGINT is ignored by default.
    let mut run = Run::start(
        &quick_stall_config(&queue, &exchange, URI, "shutdown_timeout = \"3s\""),
        &[],
        &[],
    );
    let alert = run.next_alert(Duration::from_secs(60));
    assert_eq!(alert["kind"], "consumer_stall");
    run.wait_for_stderr("no queue is bound", Duration::from_secs(20));
    run.signal("TERM");
    let (code, _, stderr) = run.exit_within(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("no queue is bound").count(), 1, "{stderr}");
    assert!(
        stderr.contains("alerts confirmed, 1 unroutable"),
        "not counted: {stderr}"
    );
    assert!(stderr.contains("alert updates"), "no summary: {stderr}");
    rt.block_on(cleanup(&queue, &exchange));
}

#[test]
fn a_wrong_amqp_password_is_told_at_startup_and_shutdown_names_what_it_could_not_deliver() {
    let rt = rt();
    let queue = unique("risk.refused");
    let exchange = unique("mqwatch.alerts.refused");
    let password = unique("wrong-pw");
    rt.block_on(abandoned_queue(&queue, 5));
    let uri = format!("amqp://guest:{password}@127.0.0.1:5672/%2f");
    // The management API has its own, working credentials: the poller sees the queue.
    let config = quick_stall_config(&queue, &exchange, &uri, "shutdown_timeout = \"3s\"")
        + "management_user = \"guest\"\nmanagement_password = \"guest\"\n";
    let mut run = Run::start(&config, &[], &[]);
    run.wait_for_stderr("alert exchange", Duration::from_secs(15));
    run.wait_for_stderr("cannot connect", Duration::from_secs(15));
    let alert = run.next_alert(Duration::from_secs(60));
    let id = alert["id"].as_str().unwrap().to_string();

    let asked = Instant::now();
    run.signal("INT");
    let (code, stdout, stderr) = run.exit_within(Duration::from_secs(30));
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "shutdown took {:?} with a 3 s deadline",
        asked.elapsed()
    );
    assert_eq!(code, 1, "undelivered alerts must fail the run: {stderr}");
    assert!(
        stderr.contains("not delivered to rabbitmq") && stderr.contains(&id),
        "the undelivered alert was not named: {stderr}"
    );
    assert!(
        !stderr.contains(&password) && !stdout.contains(&password),
        "{stderr}"
    );
    rt.block_on(cleanup(&queue, &exchange));
}

#[test]
fn a_second_ctrl_c_exits_at_once_while_the_first_waits_for_a_sink() {
    let rt = rt();
    let queue = unique("risk.impatient");
    let exchange = unique("mqwatch.alerts.impatient");
    rt.block_on(abandoned_queue(&queue, 5));
    let uri = format!("amqp://guest:{}@127.0.0.1:5672/%2f", unique("wrong"));
    let config = quick_stall_config(&queue, &exchange, &uri, "shutdown_timeout = \"2m\"")
        + "management_user = \"guest\"\nmanagement_password = \"guest\"\n";
    let mut run = Run::start(&config, &[], &[]);
    run.next_alert(Duration::from_secs(60));
    run.signal("INT");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        run.running(),
        "the first Ctrl-C did not wait for the waiting alert"
    );
    let asked = Instant::now();
    run.signal("INT");
    let (code, _, stderr) = run.exit_within(Duration::from_secs(10));
    assert_eq!(code, 130, "{stderr}");
    assert!(asked.elapsed() < Duration::from_secs(5), "{stderr}");
    rt.block_on(cleanup(&queue, &exchange));
}

#[test]
fn unreachable_brokers_fail_the_run_with_one_line_after_the_startup_window() {
    let password = unique("pw");
    let config = format!(
        r#"
[engine]
startup_timeout = "3s"
[rabbitmq]
uri = "amqp://risk:{password}@127.0.0.1:1/%2f"
management_url = "http://127.0.0.1:1"
queues = ["risk.scoring"]
[kafka]
bootstrap_servers = "127.0.0.1:1"
"#
    );
    let run = Run::start(&config, &[], &[]);
    let (code, stdout, stderr) = run.exit_within(Duration::from_secs(40));
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("mqwatch: no broker reachable within 3s: ")
            && last.contains("rabbitmq poller")
            && last.contains("kafka lag poller (127.0.0.1:1)"),
        "{last}"
    );
    assert!(!stderr.contains(&password) && !stdout.contains(&password));
    // A broker that stays down is logged when lost, then with a doubling pause: not every poll.
    let poller_warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("rabbitmq poller"))
        .count();
    assert!(
        poller_warnings <= 2,
        "{poller_warnings} warnings:\n{stderr}"
    );
}

#[test]
fn no_secret_of_a_malformed_config_reaches_stdout_stderr_or_the_log() {
    let secret = unique("s3cretPW");
    let quick = "[engine]\nstartup_timeout = \"1s\"\nshutdown_timeout = \"1s\"\n";
    let cases = [
        // A URI without a scheme.
        (format!("[rabbitmq]\nuri = \"guest:{secret}@127.0.0.1:5672\"\n"), 2),
        // An unescaped @ in the password.
        (
            format!("{quick}[rabbitmq]\nuri = \"amqp://guest:p@{secret}@127.0.0.1:1/%2f\"\nmanagement_url = \"\"\nqueues = [\"q\"]\n"),
            1,
        ),
        // A TOML syntax error on the line of the URI.
        (format!("[rabbitmq]\nuri = \"amqp://guest:{secret}@127.0.0.1/%2f\n"), 2),
        // A misspelled Kafka property.
        (
            format!("[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n[kafka.properties]\n\"sasl.pasword\" = \"{secret}\"\n"),
            2,
        ),
        // Secrets in well-formed settings, through a run that fails and logs at debug level.
        (
            format!("{quick}[rabbitmq]\nuri = \"amqp://u:{secret}@127.0.0.1:1/%2f\"\nmanagement_url = \"http://127.0.0.1:1\"\nmanagement_password = \"{secret}\"\n\
                     [kafka]\nbootstrap_servers = \"127.0.0.1:1\"\nproperties = {{ \"sasl.password\" = \"{secret}\", \"sasl.username\" = \"risk\" }}\n"),
            1,
        ),
    ];
    for (config, want) in cases {
        let run = Run::start(&config, &["--for", "20s"], &[("MQWATCH_LOG", "debug")]);
        let (code, stdout, stderr) = run.exit_within(Duration::from_secs(60));
        assert_eq!(code, want, "{config}\n{stderr}");
        let secret_tail = &secret[4..];
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !text.contains(secret_tail),
                "the secret reached {what} for\n{config}\n{text}"
            );
        }
        assert!(
            stderr
                .lines()
                .filter(|l| l.starts_with("mqwatch: "))
                .count()
                == 1,
            "not one error line:\n{stderr}"
        );
    }
}
