//! Three `mqwatch run` engines share the watch as one consumer group on the real Kafka-protocol
//! broker (127.0.0.1:9092, from `.ci/services`). Six workload topics, one on each partition of
//! the metrics topic, so that each engine owns two; a consumer stalls on every one of them; one
//! engine is killed with SIGKILL mid-incident. Its partitions move to the others within the
//! group's session timeout plus an interval (measured and printed), the episodes it had open go
//! on there under their ids without a new warm-up, and the subscriber ends with every episode's
//! firing and resolution, each incident one episode.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::live::Run;
use common::unique;
use mqwatch::alert::{Alert, AlertState};
use mqwatch::demo::kafka::{KafkaWorkload, Subscriber};
use mqwatch::detect::AlertKind;
use mqwatch::scale_out::partition_for;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const PARTITIONS: i32 = 6;
const SESSION: Duration = Duration::from_secs(6);
const INTERVAL: Duration = Duration::from_secs(5);

/// One topic name per metrics partition: its shard's routing key (`cluster/topic`) lands there.
fn topics(prefix: &str) -> Vec<String> {
    let mut by_partition = BTreeMap::new();
    for i in 0.. {
        let t = format!("{prefix}.t{i}");
        let p = partition_for(format!("k/{t}").as_bytes(), PARTITIONS);
        by_partition.entry(p).or_insert(t);
        if by_partition.len() == PARTITIONS as usize {
            break;
        }
    }
    by_partition.into_values().collect()
}

/// The port an engine serves its API on, from its log.
fn api_port(run: &Run) -> u16 {
    let t = Instant::now();
    loop {
        let err = run.stderr();
        if let Some(rest) = err.split("dashboard on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits.parse().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no API address:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The topics whose groups an engine judges now, with when each was last judged (event time).
fn judged(port: u16) -> BTreeMap<String, i64> {
    let body = ureq::get(format!("http://127.0.0.1:{port}/api/v1/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "kafka_group")
        .map(|e| {
            let topic = e["labels"]["topic"].as_str().unwrap_or("").to_string();
            (topic, e["judged_at"].as_i64().unwrap_or(0))
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn three_engines_share_the_watch_and_one_killed_mid_incident_loses_nothing() {
    let prefix = unique("so");
    let topics = topics(&prefix);
    let alerts_topic = format!("{prefix}.alerts");
    let config = format!(
        "stdout = false\n\
         [engine]\ninterval = \"{}s\"\nlateness = \"2s\"\n\
         [kafka]\nbootstrap_servers = \"{BOOTSTRAP}\"\ncluster = \"k\"\n\
         include_topics = [{:?}]\nexclude_topics = []\ninclude_groups = [{:?}]\nexclude_groups = []\n\
         poll_interval = \"2s\"\nalerts_topic = \"{alerts_topic}\"\n\
         [scale_out]\ncluster = \"k\"\ngroup = \"{prefix}.engines\"\nmetrics_topic = \"{prefix}.metrics\"\n\
         changelog_topic = \"{prefix}.state\"\npartitions = {PARTITIONS}\nsession_timeout = \"{}s\"\n",
        INTERVAL.as_secs(),
        format!("^{}\\.t[0-9]+$", regex::escape(&prefix)),
        format!("^{}\\.g[0-9]+$", regex::escape(&prefix)),
        SESSION.as_secs(),
    );
    let with_state = |dir: &std::path::Path| {
        format!(
            "{config}[state]\ndir = {:?}\ncheckpoint_interval = \"5s\"\n",
            dir.display().to_string()
        )
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut engines: Vec<Option<Run>> = dirs
        .iter()
        .map(|d| Some(Run::start(&with_state(d.path()), &[], &[])))
        .collect();
    let ports: Vec<u16> = engines
        .iter()
        .map(|e| api_port(e.as_ref().unwrap()))
        .collect();
    let sub = Subscriber::start(BOOTSTRAP, &alerts_topic, &unique("risk-team")).unwrap();
    let works: Vec<KafkaWorkload> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| KafkaWorkload::start(BOOTSTRAP, t, 2, &format!("{prefix}.g{i}"), 30).unwrap())
        .collect();

    // Every topic judged by exactly one engine, each engine with some.
    let t = Instant::now();
    let owner = loop {
        let seen: Vec<BTreeMap<String, i64>> = ports.iter().map(|&p| judged(p)).collect();
        let mut owner = BTreeMap::new();
        for (e, topics) in seen.iter().enumerate() {
            for topic in topics.keys() {
                owner
                    .entry(topic.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(e);
            }
        }
        let settled = owner.len() == topics.len()
            && owner.values().all(|e| e.len() == 1)
            && (0..3).all(|e| owner.values().any(|o| o.contains(&e)));
        if settled && t.elapsed() > Duration::from_secs(30) {
            break owner
                .into_iter()
                .map(|(t, e)| (t, *e.iter().next().unwrap()))
                .collect::<BTreeMap<String, usize>>();
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the engines never settled on one owner per topic: {owner:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        sub.alerts.try_recv().is_err(),
        "steady traffic raised an alert"
    );

    // A consumer stuck on every topic: each engine fires for the topics it owns.
    for w in &works {
        w.freeze_partition(1);
    }
    let mut got: Vec<Alert> = Vec::new();
    let t = Instant::now();
    while got
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| &a.labels["topic"])
        .collect::<BTreeSet<_>>()
        .len()
        < topics.len()
    {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "not every stall fired: {got:?}"
        );
        if let Ok((_, a)) = sub.alerts.recv_timeout(Duration::from_secs(1)) {
            got.push(a);
        }
    }
    assert!(
        got.iter().all(|a| a.kind == AlertKind::ConsumerStall),
        "{got:?}"
    );

    // Kill the engine that owns the first topic, mid-incident.
    let victim = owner[&topics[0]];
    let orphans: Vec<&String> = owner
        .iter()
        .filter(|(_, &e)| e == victim)
        .map(|(t, _)| t)
        .collect();
    let mut killed = engines[victim].take().unwrap();
    killed.child.kill().unwrap();
    let killed_at = now_ms();
    let kill = Instant::now();
    killed.child.wait().unwrap();
    // Taken over: judged by a survivor at an interval that ended after the kill.
    let takeover = loop {
        let judged_after: BTreeSet<String> = (0..3)
            .filter(|&e| e != victim)
            .flat_map(|e| judged(ports[e]))
            .filter(|(_, at)| *at > killed_at)
            .map(|(t, _)| t)
            .collect();
        if orphans.iter().all(|t| judged_after.contains(*t)) {
            break kill.elapsed();
        }
        if kill.elapsed() > Duration::from_secs(90) {
            for e in engines.iter().flatten() {
                println!("----\n{}", e.stderr());
            }
            panic!("never taken over: {judged_after:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "takeover: the killed engine's {} entities judged again by the others {:.1} s after the kill (session timeout {} s, interval {} s)",
        orphans.len(),
        takeover.as_secs_f64(),
        SESSION.as_secs(),
        INTERVAL.as_secs()
    );
    // The session timeout, a rebalance and an interval. The test broker (tansu) counts only
    // heartbeats as signs of life, and a survivor waiting out the rebalance is sometimes
    // evicted too and must rejoin: one more session timeout, at worst.
    assert!(
        takeover <= 2 * SESSION + INTERVAL + Duration::from_secs(10),
        "takeover took {takeover:?}"
    );

    // The consumers recover: every episode resolves, the killed engine's under their ids.
    for w in &works {
        w.thaw_partition(1);
    }
    let t = Instant::now();
    loop {
        let fired: BTreeSet<&str> = got
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.id.as_str())
            .collect();
        let resolved: BTreeSet<&str> = got
            .iter()
            .filter(|a| a.state == AlertState::Resolved)
            .map(|a| a.id.as_str())
            .collect();
        if fired.is_subset(&resolved) && !fired.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "episodes never resolved: fired {fired:?}, resolved {resolved:?}"
        );
        if let Ok((_, a)) = sub.alerts.recv_timeout(Duration::from_secs(1)) {
            got.push(a);
        }
    }
    // One incident, one episode: no topic saw a second id (a new warm-up would have fired anew).
    let mut ids_by_topic: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in &got {
        ids_by_topic
            .entry(a.labels["topic"].as_str())
            .or_default()
            .insert(a.id.as_str());
    }
    assert_eq!(ids_by_topic.len(), topics.len(), "{ids_by_topic:?}");
    assert!(
        ids_by_topic.values().all(|ids| ids.len() == 1),
        "{ids_by_topic:?}"
    );

    for e in engines.iter_mut().flatten() {
        e.signal("TERM");
    }
    for e in engines.into_iter().flatten() {
        let (code, _, err) = e.exit_within(Duration::from_secs(40));
        assert_eq!(code, 0, "{err}");
    }
    for w in works {
        w.stop();
    }
}
