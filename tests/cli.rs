//! The `mqwatch` binary as a user meets it: bad input is reported with file and line, counted by
//! reason, and never stops the run (unless --strict); usage errors exit 2.

mod common;

use std::process::Command;

fn mqwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mqwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn mixed_input(dir: &std::path::Path) -> std::path::PathBuf {
    // A queue loses its consumers at minute 20; bad lines are sprinkled in between.
    let mut lines = Vec::new();
    for s in (0..3600).step_by(15) {
        let ts = 1_767_225_600_000i64 + s * 1000;
        let gone = (1200..2400).contains(&s);
        let l = r#"{"cluster":"r","vhost":"/","queue":"risk.scoring"}"#;
        let ready = if gone { (s - 1200) * 30 } else { 3 };
        let consumers = if gone { 0 } else { 3 };
        lines.push(format!(
            r#"{{"ts":{ts},"name":"rabbitmq_queue_messages_ready","labels":{l},"value":{ready}}}"#
        ));
        lines.push(format!(
            r#"{{"ts":{ts},"name":"rabbitmq_queue_consumers","labels":{l},"value":{consumers}}}"#
        ));
        if s == 600 {
            lines.push("this is not json".into());
            lines.push(r#"{"ts":1767225600000,"name":"message_latency_ms","value":-5}"#.into());
            lines.push(r#"{"ts":1767225600,"name":"x","value":1}"#.into());
            lines.push(r#"{"ts":1767225600000,"value":1}"#.into());
        }
    }
    common::write_lines(dir, "mixed.jsonl", &lines)
}

#[test]
fn bad_lines_are_reported_counted_and_skipped_without_losing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let f = mixed_input(dir.path());
    let (code, stdout, stderr) = mqwatch(&["replay", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("mixed.jsonl:line 83: not_json"), "{stderr}");
    assert!(stderr.contains("negative_latency: 1"), "{stderr}");
    assert!(
        stderr.contains("absurd_timestamp: 1") && stderr.contains("missing_field: 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("480 events accepted, 4 refused"),
        "{stderr}"
    );
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Fires as a warning, escalates to critical after 5 minutes, resolves: one episode, one id.
    let states: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["state"].as_str().unwrap(),
                a["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("firing", "warning"),
            ("firing", "critical"),
            ("resolved", "critical")
        ],
        "{stdout}"
    );
    assert!(alerts
        .iter()
        .all(|a| a["id"] == alerts[0]["id"] && a["kind"] == "consumer_stall"));
    assert_eq!(alerts[0]["labels"]["queue"], "risk.scoring");
}

#[test]
fn sigterm_stops_a_replay_that_still_reads_and_prints_its_summary() {
    // A pipe that never ends: the replay is still reading when the signal comes.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("events.jsonl");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqwatch"))
        .args(["replay", "--no-models", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
            return;
        };
        for i in 0..2000i64 {
            let line = format!(
                r#"{{"ts":{},"name":"queue_depth","labels":{{"queue":"q"}},"value":{i}}}"#,
                1_767_225_600_000i64 + i * 1000
            );
            if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the replay ended by itself"
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let accepted: u64 = stderr
        .lines()
        .last()
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((50..2000).contains(&accepted), "{stderr}");
    drop(writer);
}

#[test]
fn strict_mode_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = mixed_input(dir.path());
    let (code, stdout, stderr) = mqwatch(&["replay", "--strict", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.lines().last().unwrap().contains("line 83: not_json"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
}

#[test]
fn usage_and_config_errors_exit_2_with_one_clear_line() {
    let (code, _, stderr) = mqwatch(&["replay", "/nonexistent.jsonl"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no such file: /nonexistent.jsonl"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[engine]\nintervall = \"1s\"\n").unwrap();
    let f = common::write_lines(dir.path(), "e.jsonl", &[]);
    let (code, _, stderr) = mqwatch(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mqwatch:"))
        .collect();
    assert_eq!(
        errors.join("\n"),
        format!(
            "mqwatch: config {}: line 2: unknown key `intervall` in [engine] (did you mean `interval`?)",
            cfg.display()
        ),
        "one line naming the file, the line, the key and the nearest valid name"
    );
    assert_eq!(
        mqwatch(&[
            "gen",
            "--scenario",
            "nope",
            "--out",
            dir.path().to_str().unwrap()
        ])
        .0,
        2
    );
    assert_eq!(mqwatch(&["frobnicate"]).0, 2);
}

#[test]
fn gen_then_eval_reports_a_scorecard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let (code, _, stderr) = mqwatch(&[
        "gen",
        "--scenario",
        "group-stop",
        "--hours",
        "3",
        "--seed",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--gzip",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let events = out.join("events.jsonl.gz");
    let labels = out.join("labels.json");
    let (code, stdout, _) = mqwatch(&[
        "eval",
        "--events",
        events.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["recall"], 1.0);
    let incidents = r["incidents"].as_u64().unwrap();
    assert!(incidents >= 2);

    // The same run as a report people look at: every incident plotted with its window, alerts
    // and baseline, in one self-contained page.
    let report = dir.path().join("report");
    let (code, _, stderr) = mqwatch(&[
        "eval",
        "--events",
        events.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    for n in 0..incidents {
        assert!(
            html.contains(&format!("id=\"incident-{n}\"")),
            "incident {n} missing"
        );
    }
    assert!(html.matches("<svg").count() as u64 >= incidents);
    for part in [
        "labelled incident",
        "baseline (median",
        "consumer_stall",
        "False alerts",
    ] {
        assert!(html.contains(part), "report lacks {part:?}");
    }
    assert!(!html.contains("plot failed"));
    assert!(
        !html.contains("src=\"http"),
        "the report must not load anything"
    );
}

#[test]
fn run_watches_both_brokers_then_drains_and_exits_cleanly() {
    // Needs the brokers of .ci/services. Both probes make traffic of their own.
    let dir = tempfile::tempdir().unwrap();
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let cfg = dir.path().join("live.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[rabbitmq]
include = ["^mqwatch-cli-{id}$"]
alerts_exchange = "mqwatch.alerts.cli-{id}"
[rabbitmq.probe]
enabled = true
queue = "mqwatch.probe.cli-{id}"
interval = "200ms"
[http]
listen = "127.0.0.1:0"
silences_file = ""
[kafka]
include_topics = ["^mqwatch-cli-{id}$"]
alerts_topic = "mqwatch.alerts.cli-{id}"
[kafka.probe]
enabled = true
topic = "mqwatch.probe.cli-{id}"
interval = "200ms"
[kafka.properties]
"sasl.password" = "never-printed-{id}"
"#
        ),
    )
    .unwrap();
    let (code, _, stderr) = mqwatch(&["run", "--config", cfg.to_str().unwrap(), "--for", "8s"]);
    assert_eq!(code, 0, "{stderr}");
    // One startup line per broker says what is watched and where alerts go.
    assert!(
        stderr.contains("watching queues matching")
            && stderr.contains(&format!("alerts to exchange mqwatch.alerts.cli-{id}"))
            && stderr.contains("watching topics matching")
            && stderr.contains(&format!("alerts to topic mqwatch.alerts.cli-{id}")),
        "{stderr}"
    );
    // No alert was raised, yet both alert destinations exist for subscribers to bind to.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exchange = format!("mqwatch.alerts.cli-{id}");
    rt.block_on(async {
        let conn =
            mqwatch::rabbitmq::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "mqwatch-test")
                .await
                .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let passive = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = ch
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                passive,
                lapin::types::FieldTable::default(),
            )
            .await;
        assert!(
            declared.is_ok(),
            "no alert exchange after startup: {declared:?}"
        );
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    });
    use rdkafka::consumer::Consumer;
    let meta: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .create()
        .unwrap();
    let topic = format!("mqwatch.alerts.cli-{id}");
    let md = meta
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        md.topics()
            .iter()
            .any(|t| t.name() == topic && !t.partitions().is_empty()),
        "no alert topic after startup"
    );
    let summary = stderr.lines().last().unwrap();
    let events: u64 = summary.split(' ').next().unwrap().parse().unwrap_or(0);
    assert!(events >= 20, "{summary}");
    assert!(
        !stderr.contains(&format!("never-printed-{id}")),
        "a secret reached the log"
    );
    assert!(
        stderr.contains("sasl.password") && stderr.contains("***"),
        "{stderr}"
    );
}
