//! Restarts without a blind spot, the hard way: `mqwatch run`, watching a queue on the real
//! RabbitMQ (127.0.0.1:5672), is killed with SIGKILL in the middle of an incident and started
//! again on the same state directory. The episode open at the kill resolves under its id; the
//! alert accepted but not yet delivered at the kill (its webhook was refusing) is delivered after
//! it; and the subscriber never sees a second episode of the same incident.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::options::ExchangeDeleteOptions;
use tokio::sync::mpsc::UnboundedReceiver;

use common::live::Run;
use common::receiver::Receiver;
use common::unique;
use mqwatch::alert::{Alert, AlertState};
use mqwatch::demo::rabbitmq::{subscribe, ConsumerMode, Workload};
use mqwatch::detect::AlertKind;

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn next_alert(
    rx: &mut UnboundedReceiver<(String, Alert)>,
    within: Duration,
) -> Option<Alert> {
    tokio::time::timeout(within, rx.recv())
        .await
        .ok()
        .flatten()
        .map(|(_, a)| a)
}

/// Waits until the webhook receiver has accepted `(id, state)`.
async fn hook_gets(hook: &Receiver, id: &str, state: &str, within: Duration) {
    let t = Instant::now();
    while !hook
        .accepted()
        .iter()
        .any(|a| a["id"] == id && a["state"] == state)
    {
        assert!(
            t.elapsed() < within,
            "the webhook never got ({id}, {state}); it got {:?}",
            hook.accepted()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_incident_loses_no_alert_and_the_episode_resolves_under_its_id() {
    let queue = unique("ledger.postings");
    let exchange = unique("mqwatch.alerts");
    let (_sub, mut alerts) = subscribe(URI, &exchange, "#").await.unwrap();
    let hook = Receiver::start(503);
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "stdout = false\n\
         [engine]\ninterval = \"5s\"\nlateness = \"2s\"\n\
         [state]\ndir = {:?}\ncheckpoint_interval = \"5s\"\n\
         [rabbitmq]\nuri = \"{URI}\"\ninclude = [{:?}]\nalerts_exchange = \"{exchange}\"\npoll_interval = \"2s\"\n\
         [webhook]\nurl = \"{}\"\ntimeout = \"2s\"\n",
        state.path().display().to_string(),
        format!("^{}$", regex::escape(&queue)),
        hook.url,
    );
    let mut work = Workload::start(URI, &queue, 40.0).await.unwrap();
    work.add_consumers(3, ConsumerMode::Ack, 20).await.unwrap();

    let mut first = Run::start(&config, &[], &[]);
    tokio::time::sleep(Duration::from_secs(20)).await;
    work.remove_consumers().await;
    let fired = next_alert(&mut alerts, Duration::from_secs(60))
        .await
        .expect("no stall within 60 s of the consumers leaving");
    assert_eq!(
        (fired.state, fired.kind, fired.labels["queue"].as_str()),
        (AlertState::Firing, AlertKind::ConsumerStall, queue.as_str())
    );
    assert!(
        hook.accepted().is_empty(),
        "the webhook refuses everything so far"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    // The consumers are still gone when the engine comes back; the webhook now takes alerts.
    hook.answer(200);
    let second = Run::start(&config, &[], &[]);
    hook_gets(&hook, &fired.id, "firing", Duration::from_secs(30)).await;
    work.add_consumers(3, ConsumerMode::Ack, 20).await.unwrap();
    let mut seen = vec![fired.clone()];
    let resolved = loop {
        let a = next_alert(&mut alerts, Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("no resolution within 120 s; stderr:\n{}", second.stderr()));
        seen.push(a.clone());
        if a.state == AlertState::Resolved {
            break a;
        }
    };
    assert_eq!(
        resolved.id, fired.id,
        "the episode resolves under the id it fired with"
    );
    let ids: BTreeSet<&str> = seen.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one incident, one episode: {seen:?}");
    hook_gets(&hook, &fired.id, "resolved", Duration::from_secs(30)).await;
    assert!(
        second.stderr().contains("resuming from the checkpoint"),
        "{}",
        second.stderr()
    );

    second.signal("TERM");
    let (code, _, err) = second.exit_within(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    work.stop().await;
    let conn = mqwatch::rabbitmq::connect(URI, "mqwatch-test-cleanup")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}
