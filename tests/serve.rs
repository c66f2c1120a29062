//! The operations surface of `mqwatch run`, against the real RabbitMQ that `.ci/services` starts
//! and Debian's Prometheus: a queue whose consumers are gone shows as STOP in the API, its alert
//! is open with its history, `/metrics` passes `promtool check metrics`, and a real Prometheus
//! server scrapes mqwatch and answers a query with the queue's depth.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::live::Run;
use common::unique;

const MANAGEMENT: &str = "http://127.0.0.1:15672";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GET `url`: the status code and the body.
fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), body)
}

fn get_json(url: &str) -> (u16, Value) {
    let (code, body) = get(url);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
    (code, v)
}

/// A queue with `ready` messages and nobody consuming them, through the management API.
fn abandoned_queue(name: &str, ready: usize) {
    let a = agent();
    let q = format!("{MANAGEMENT}/api/queues/%2f/{name}");
    let auth = "Basic Z3Vlc3Q6Z3Vlc3Q="; // guest:guest
    let r = a
        .put(&q)
        .header("authorization", auth)
        .send_json(serde_json::json!({}))
        .unwrap();
    assert!(r.status().is_success(), "declare {name}: {}", r.status());
    let publish = format!("{MANAGEMENT}/api/exchanges/%2f/amq.default/publish");
    for _ in 0..ready {
        let body = serde_json::json!({
            "properties": {}, "routing_key": name, "payload": "{}", "payload_encoding": "string"
        });
        let r = a
            .post(&publish)
            .header("authorization", auth)
            .send_json(body)
            .unwrap();
        assert!(r.status().is_success());
    }
}

fn delete_queue(name: &str) {
    let _ = agent()
        .delete(&format!("{MANAGEMENT}/api/queues/%2f/{name}"))
        .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .call();
}

/// Starts `mqwatch run` watching `queue`, serving on a free port; returns the run and its URL.
fn serve(queue: &str) -> (Run, String) {
    serve_with(queue, "2s", "silences_file = \"\"")
}

/// As [`serve`], the stall after `stall_after`, with more `[http]` settings.
fn serve_with(queue: &str, stall_after: &str, http: &str) -> (Run, String) {
    let config = format!(
        r#"
[engine]
interval = "1s"
lateness = "500ms"
[stall]
no_consumers_after = "{stall_after}"
[http]
listen = "127.0.0.1:0"
{http}
[rabbitmq]
uri = "amqp://guest:guest@127.0.0.1:5672/%2f"
include = ["^{}$"]
poll_interval = "1s"
alerts_exchange = "{queue}.alerts"
"#,
        regex::escape(queue).replace('\\', "\\\\")
    );
    let mut run = Run::start(&config, &[], &[]);
    run.wait_for_stderr("dashboard on http://", Duration::from_secs(20));
    let err = run.stderr();
    let at = err.find("dashboard on http://").unwrap() + "dashboard on ".len();
    let url: String = err[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (run, url)
}

/// Polls `check` every 200 ms until it gives a value, failing after `within`.
fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(t.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_api_shows_an_abandoned_queue_as_stopped_with_its_open_alert_and_answers_errors_as_json() {
    let queue = unique("serve.api");
    abandoned_queue(&queue, 7);
    let (run, url) = serve(&queue);

    let (code, health) = get_json(&format!("{url}/healthz"));
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    let ready = eventually(Duration::from_secs(30), "ready", || {
        let (code, v) = get_json(&format!("{url}/readyz"));
        (code == 200).then_some(v)
    });
    assert_eq!(ready["connected"], true);

    let entity = eventually(Duration::from_secs(30), "the queue listed as STOP", || {
        let (_, v) = get_json(&format!("{url}/api/v1/status"));
        let list = v["entities"].as_array()?;
        list.iter()
            .find(|e| e["labels"]["queue"] == queue.as_str() && e["status"] == "STOP")
            .cloned()
    });
    assert_eq!(entity["kind"], "rabbitmq_queue");
    assert_eq!(entity["figures"]["backlog"], 7.0);
    assert_eq!(entity["figures"]["consumers"], 0.0);

    let id = entity["id"].as_str().unwrap();
    let (code, detail) = get_json(&format!("{url}/api/v1/entities/{id}"));
    assert_eq!(code, 200);
    let history = detail["history"].as_array().unwrap();
    assert!(!history.is_empty(), "{detail}");
    assert_eq!(history.last().unwrap()[1], 7.0);

    let (_, alerts) = get_json(&format!("{url}/api/v1/alerts"));
    let open = alerts["open"].as_array().unwrap();
    let stall = open
        .iter()
        .find(|e| e["latest"]["labels"]["queue"] == queue.as_str())
        .unwrap_or_else(|| panic!("no open alert on {queue}: {alerts}"));
    assert_eq!(stall["latest"]["kind"], "consumer_stall");
    assert_eq!(stall["updates"][0]["state"], "firing");

    let (code, missing) = get_json(&format!("{url}/api/v1/entities/rabbitmq_queue-0"));
    assert_eq!(code, 404);
    assert!(
        missing["error"].as_str().unwrap().contains("no entity"),
        "{missing}"
    );
    let mut wrong = agent()
        .post(&format!("{url}/api/v1/status"))
        .send_json(serde_json::json!({}))
        .unwrap();
    assert_eq!(wrong.status(), 405);
    let body: Value = serde_json::from_str(&wrong.body_mut().read_to_string().unwrap()).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("does not take POST"),
        "{body}"
    );
    let (code, nowhere) = get_json(&format!("{url}/api/v2/everything"));
    assert_eq!(code, 404);
    assert!(nowhere["error"]
        .as_str()
        .unwrap()
        .contains("/api/v2/everything"));

    run.signal("TERM");
    let (code, _, _) = run.exit_within(Duration::from_secs(20));
    assert_eq!(code, 0);
    delete_queue(&queue);
}

/// A Prometheus server of its own on a free port, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mqwatch\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`; .ci/services installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, if it has one.
    fn query(&self, q: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, urlencode(q));
        let mut r = agent().get(&url).call().ok()?;
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_the_queue_depth_and_status() {
    let queue = unique("serve.metrics");
    abandoned_queue(&queue, 5);
    let (run, url) = serve(&queue);
    let selector = format!("{{queue=\"{queue}\"}}");

    let text = eventually(Duration::from_secs(30), "the queue's metrics", || {
        let (code, body) = get(&format!("{url}/metrics"));
        let all = [
            "mqwatch_rabbitmq_queue_ready{cluster=",
            "mqwatch_polls_total{source=\"rabbitmq poller",
            "mqwatch_poll_duration_seconds_total{source=\"rabbitmq poller",
            "mqwatch_sink_spooled_alerts{sink=\"rabbitmq alert exchange",
        ];
        (code == 200 && all.iter().all(|m| body.contains(m))).then_some(body)
    });
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "mqwatch_events_accepted_total",
        "mqwatch_build_info",
        "mqwatch_series",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    let prometheus = Prometheus::start(url.trim_start_matches("http://"));
    let depth = eventually(
        Duration::from_secs(60),
        "Prometheus to scrape the depth",
        || prometheus.query(&format!("mqwatch_rabbitmq_queue_ready{selector}")),
    );
    assert_eq!(depth, 5.0);
    let stopped = format!("mqwatch_rabbitmq_queue_status{{queue=\"{queue}\",status=\"STOP\"}}");
    let stop = eventually(
        Duration::from_secs(60),
        "the STOP status in Prometheus",
        || prometheus.query(&stopped).filter(|v| *v == 1.0),
    );
    assert_eq!(stop, 1.0);
    let up = prometheus.query("up{job=\"mqwatch\"}");
    assert_eq!(up, Some(1.0), "Prometheus sees the target up");

    drop(prometheus);
    run.signal("TERM");
    let (code, _, _) = run.exit_within(Duration::from_secs(20));
    assert_eq!(code, 0);
    delete_queue(&queue);
}

/// A request with a JSON body and maybe a bearer token: the status code and the JSON answer.
fn send(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut r = match (method, body) {
        ("POST", Some(b)) => {
            let mut req = a.post(url);
            if let Some(h) = &auth {
                req = req.header("authorization", h);
            }
            req.send_json(b).unwrap()
        }
        ("DELETE", _) => {
            let mut req = a.delete(url);
            if let Some(h) = &auth {
                req = req.header("authorization", h);
            }
            req.call().unwrap()
        }
        _ => unreachable!(),
    };
    let body = r.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
    (r.status().as_u16(), v)
}

#[test]
fn a_silenced_stall_is_listed_but_not_delivered_and_the_silence_survives_a_restart() {
    let queue = unique("serve.silence");
    abandoned_queue(&queue, 3);
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-api-token-for-tests";
    let http = format!(
        "token = \"{token}\"\nsilences_file = \"{}\"",
        dir.path().join("silences.json").display()
    );
    let (run, url) = serve_with(&queue, "6s", &http);
    let silences = format!("{url}/api/v1/silences");
    let body = serde_json::json!({
        "matchers": [{"name": "queue", "value": regex::escape(&queue), "isRegex": true}],
        "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "ops",
        "comment": "queue migration"
    });

    let (code, refused) = send("POST", &silences, None, Some(body.clone()));
    assert_eq!(code, 401, "{refused}");
    let (code, refused) = send("POST", &silences, Some("wrong"), Some(body.clone()));
    assert_eq!(
        (code, refused["error"].as_str()),
        (401, Some("wrong bearer token"))
    );
    let bad = serde_json::json!({"matchers": [{"name": "queue", "value": "(", "isRegex": true}], "endsAt": "2099-01-01T00:00:00Z"});
    let (code, refused) = send("POST", &silences, Some(token), Some(bad));
    assert_eq!(code, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("bad regex"),
        "{refused}"
    );

    let (code, made) = send("POST", &silences, Some(token), Some(body));
    assert_eq!(code, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();

    let episode = eventually(Duration::from_secs(40), "the silenced stall listed", || {
        let (_, v) = get_json(&format!("{url}/api/v1/alerts"));
        v["open"]
            .as_array()?
            .iter()
            .find(|e| e["latest"]["labels"]["queue"] == queue.as_str())
            .cloned()
    });
    assert_eq!(episode["silenced_by"], id.as_str());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        run.lines.try_recv().is_err(),
        "a silenced alert reached stdout"
    );
    assert!(!run.stderr().contains(token), "the token reached the log");
    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);

    let (run, url) = serve_with(&queue, "6s", &http);
    let (_, listed) = get_json(&format!("{url}/api/v1/silences"));
    let kept = &listed["silences"][0];
    assert_eq!(
        (kept["id"].as_str(), kept["status"].as_str()),
        (Some(id.as_str()), Some("active"))
    );
    let one = format!("{url}/api/v1/silences/{id}");
    assert_eq!(send("DELETE", &one, Some(token), None).0, 200);
    let (code, gone) = send("DELETE", &one, Some(token), None);
    assert_eq!(code, 404, "{gone}");
    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
    delete_queue(&queue);
}

/// An Alertmanager of its own on free ports, with clustering off.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian; .ci/services installs it)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "Alertmanager ready", || {
            agent()
                .get(&format!("{url}/-/ready"))
                .call()
                .ok()
                .filter(|r| r.status() == 200)
        });
        Alertmanager {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn alertmanager_receives_the_stall_with_a_link_back_and_a_silence_made_there_breaks_nothing() {
    let queue = unique("serve.am");
    abandoned_queue(&queue, 4);
    let am = Alertmanager::start();
    let extra = format!(
        "silences_file = \"\"\nexternal_url = \"http://mqwatch.example:9464\"\n[alertmanager]\nurl = \"{}\"\nresend_interval = \"2s\"",
        am.url
    );
    let (run, url) = serve_with(&queue, "2s", &extra);
    let filter = urlencode(&format!("queue=\"{queue}\""));
    let alerts_url = format!("{}/api/v2/alerts?filter={filter}", am.url);
    let alert = eventually(Duration::from_secs(40), "the alert in Alertmanager", || {
        let (_, v) = get_json(&alerts_url);
        v.as_array()?.first().cloned()
    });
    assert_eq!(alert["labels"]["alertname"], "consumer_stall");
    assert_eq!(alert["labels"]["queue"], queue.as_str());
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("no consumers"));
    let link = alert["generatorURL"].as_str().unwrap();
    assert!(
        link.starts_with("http://mqwatch.example:9464/api/v1/alerts/consumer_stall-"),
        "{link}"
    );
    // The link leads to the episode in mqwatch's own API.
    let id = link.rsplit('/').next().unwrap();
    let (code, episode) = get_json(&format!("{url}/api/v1/alerts/{id}"));
    assert_eq!(code, 200, "{episode}");
    assert_eq!(episode["latest"]["id"], id);

    let silence = serde_json::json!({
        "matchers": [{"name": "queue", "value": queue, "isRegex": false, "isEqual": true}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "test", "comment": "maintenance"
    });
    let r = agent()
        .post(&format!("{}/api/v2/silences", am.url))
        .send_json(silence)
        .unwrap();
    assert_eq!(r.status(), 200);
    let suppressed = eventually(
        Duration::from_secs(30),
        "Alertmanager to suppress it",
        || {
            let (_, v) = get_json(&alerts_url);
            let a = v.as_array()?.first()?.clone();
            (a["status"]["state"] == "suppressed").then_some(a)
        },
    );
    let first_update = suppressed["updatedAt"].as_str().unwrap().to_string();
    // Re-sends carry on (every 2 s), accepted though silenced, and mqwatch stays healthy.
    let resent = eventually(
        Duration::from_secs(30),
        "a re-send after the silence",
        || {
            let (_, v) = get_json(&alerts_url);
            let a = v.as_array()?.first()?.clone();
            (a["updatedAt"].as_str()? != first_update).then_some(a)
        },
    );
    assert_eq!(resent["status"]["state"], "suppressed");
    assert_eq!(get(&format!("{url}/healthz")).0, 200);
    assert!(
        !run.stderr().contains("refused by the receiver"),
        "{}",
        run.stderr()
    );

    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
    delete_queue(&queue);
}

#[test]
fn a_webhook_that_fails_at_first_gets_the_alert_once_it_answers_with_the_configured_headers() {
    use std::sync::{Arc, Mutex};
    let queue = unique("serve.webhook");
    abandoned_queue(&queue, 2);
    // A receiver that answers 503 twice, then takes what it is sent.
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let refusals = Arc::new(std::sync::atomic::AtomicU32::new(2));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (kept, left) = (got.clone(), refusals.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let (kept, left) = (kept.clone(), left.clone());
                    async move {
                        use std::sync::atomic::Ordering;
                        if left.load(Ordering::SeqCst) > 0 {
                            left.fetch_sub(1, Ordering::SeqCst);
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let auth = headers["x-hook-key"].to_str().unwrap().to_string();
                        kept.lock()
                            .unwrap()
                            .push((auth, serde_json::from_str(&body).unwrap()));
                        axum::http::StatusCode::NO_CONTENT
                    }
                })
                .get(|| async { "receiver" }),
            );
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    let extra = format!(
        "silences_file = \"\"\n[webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\nheaders = {{ x-hook-key = \"k-123\" }}"
    );
    let (run, _) = serve_with(&queue, "2s", &extra);
    let (key, alert) = eventually(Duration::from_secs(40), "the alert at the webhook", || {
        got.lock().unwrap().first().cloned()
    });
    assert_eq!(
        refusals.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "it was refused twice first"
    );
    assert_eq!(key, "k-123");
    assert_eq!(alert["kind"], "consumer_stall");
    assert_eq!(alert["labels"]["queue"], queue.as_str());
    assert_eq!(alert["state"], "firing");
    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
    delete_queue(&queue);
}

#[test]
fn the_dashboard_in_headless_chromium_lists_the_stopped_queue_and_its_alert() {
    let queue = unique("serve.dashboard");
    abandoned_queue(&queue, 6);
    let (run, url) = serve(&queue);
    eventually(Duration::from_secs(30), "the queue's alert", || {
        let (_, v) = get_json(&format!("{url}/api/v1/alerts"));
        v["open"]
            .as_array()?
            .iter()
            .find(|e| e["latest"]["labels"]["queue"] == queue.as_str())
            .cloned()
    });
    let (code, page) = get(&format!("{url}/"));
    assert_eq!(code, 200);
    for external in ["http://", "https://", "//fonts", "cdn"] {
        let outside = page.matches(external).count();
        // The only URL in the page is the SVG namespace, which is never fetched.
        let allowed = if external == "http://" { 1 } else { 0 };
        assert_eq!(
            outside, allowed,
            "the page refers outside itself: {external}"
        );
    }

    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=6000", "--window-size=1280,900"])
            .args(extra)
            .arg(format!("{url}/"))
            .output()
            .expect("chromium (Debian; .ci/services installs it)")
    };
    // The page draws itself from the API after it loads: give it a few tries.
    let (dom, row) = eventually(Duration::from_secs(60), "the queue's row, plotted", || {
        let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).to_string();
        let row = dom
            .split("<tr ")
            .find(|r| r.contains(&queue) && r.contains("<polyline"))?;
        Some((dom.clone(), row.to_string()))
    });
    assert!(row.contains("data-status=\"STOP\""), "{row}");
    assert!(
        dom.contains("data-kind=\"consumer_stall\""),
        "the open alert is listed"
    );
    assert!(
        dom.contains(&format!("on queue {queue}")),
        "with its summary"
    );

    let shot = out.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
    delete_queue(&queue);
}

#[test]
fn a_taken_port_or_a_corrupt_silences_file_fails_the_run_at_once_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("silences.json");
    std::fs::write(&corrupt, "[{\"id\": 1").unwrap();
    let cases = [
        (
            format!("listen = \"127.0.0.1:{port}\"\nsilences_file = \"\""),
            format!("cannot serve on 127.0.0.1:{port}"),
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\nsilences_file = \"{}\"",
                corrupt.display()
            ),
            format!("silences file {}", corrupt.display()),
        ),
    ];
    for (http, says) in cases {
        let config = format!(
            "[http]\n{http}\n[rabbitmq]\nuri = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\ninclude = [\"^nothing-here$\"]\n"
        );
        let run = Run::start(&config, &[], &[]);
        let (code, _, stderr) = run.exit_within(Duration::from_secs(20));
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(&says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("watching"),
            "failed before any broker was watched: {stderr}"
        );
    }
}

/// A POST with a raw body over a plain socket, answered with its status and JSON. A server may
/// answer (413) before it has read a body that is too large, and close: what it said still counts.
fn post_raw(url: &str, token: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|_| conn.write_all(&body));
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let code: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let v =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {answer}"));
    (code, v)
}

#[test]
fn the_api_refuses_malformed_huge_and_nested_bodies_and_stays_up() {
    let queue = unique("serve.hostile");
    let token = "hostile-test-token";
    let (run, url) = serve_with(
        &queue,
        "6s",
        &format!("token = \"{token}\"\nsilences_file = \"\""),
    );
    let silences = format!("{url}/api/v1/silences");
    let ends = "\"endsAt\": \"2099-01-01T00:00:00Z\"";
    let many: Vec<String> = (0..40)
        .map(|i| format!("{{\"name\": \"l{i}\", \"value\": \"v\", \"isRegex\": false}}"))
        .collect();
    let hostile: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not JSON", b"matchers=queue".to_vec(), 400),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0xc3, 0x28], 400),
        ("a JSON array", b"[1, 2, 3]".to_vec(), 400),
        ("nested 20,000 deep", format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(), 400),
        ("nested objects", format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(), 400),
        ("a 1 MiB body", format!("{{\"comment\": \"{}\", {ends}}}", "x".repeat(1 << 20)).into_bytes(), 413),
        ("40 matchers", format!("{{\"matchers\": [{}], {ends}}}", many.join(",")).into_bytes(), 400),
        (
            "a 5,000-byte pattern",
            format!("{{\"matchers\": [{{\"name\": \"queue\", \"value\": \"{}\", \"isRegex\": true}}], {ends}}}", "(a|aa)*".repeat(700)).into_bytes(),
            400,
        ),
        (
            "a pattern too big to compile",
            format!("{{\"matchers\": [{{\"name\": \"queue\", \"value\": \"{}\", \"isRegex\": true}}], {ends}}}", "\\\\w{1000}").into_bytes(),
            400,
        ),
    ];
    for (what, body, want) in hostile {
        let (code, v) = post_raw(&silences, token, body);
        assert_eq!(code, want, "{what}: {v}");
        assert!(v["error"].is_string(), "{what}: {v}");
        let (code, _) = get_json(&format!("{url}/healthz"));
        assert_eq!(code, 200, "the server went down after {what}");
    }
    let (code, listed) = get_json(&silences);
    assert_eq!(
        (code, listed["silences"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    run.signal("TERM");
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
}

#[test]
fn serving_beyond_this_machine_without_a_token_is_warned_of() {
    let config = "[http]\nlisten = \"0.0.0.0:0\"\nsilences_file = \"\"\n[rabbitmq]\nuri = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\ninclude = [\"^nothing-to-watch$\"]\n";
    let mut run = Run::start(config, &["--for", "3s"], &[]);
    run.wait_for_stderr(
        "served beyond this machine without a token",
        Duration::from_secs(20),
    );
    assert_eq!(run.exit_within(Duration::from_secs(20)).0, 0);
    let quiet = "[http]\nlisten = \"127.0.0.1:0\"\nsilences_file = \"\"\n[rabbitmq]\nuri = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\ninclude = [\"^nothing-to-watch$\"]\n";
    let (_, _, err) = Run::start(quiet, &["--for", "3s"], &[]).exit_within(Duration::from_secs(20));
    assert!(!err.contains("without a token"), "{err}");
}
