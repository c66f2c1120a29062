//! Credentials and TLS as a careful operator sets them up: `amqps://` against the real RabbitMQ's
//! TLS listener, Kafka over TLS (`security.protocol = "SSL"` in `[kafka.properties]`), with
//! certificates this test makes with openssl, and every secret taken from the environment or a
//! file rather than the TOML. The engine works through both, and none of the secrets reaches
//! its output, its log (at debug, the client libraries' included), its errors or its API.
//!
//! The Kafka-protocol broker of the tests speaks TLS through a socat TLS endpoint in front of a
//! broker of this test's own (tansu advertises the TLS address, so every client connection goes
//! through it).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::live::Run;
use common::receiver::Receiver;
use common::unique;
use mqwatch::alert::AlertState;
use mqwatch::demo::kafka::Subscriber as KafkaSubscriber;
use mqwatch::demo::rabbitmq::{subscribe, ConsumerMode, Workload};
use mqwatch::detect::AlertKind;
use mqwatch::kafka::KafkaConfig;

const PLAIN: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TLS_PORT: u16 = 5671;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, readable by the broker.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        let subj = |cn: &str| format!("/CN={cn}");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-subj",
                &subj("mqwatch test CA"),
            ],
        );
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p("server.key"),
                "-out",
                &p("server.csr"),
                "-subj",
                &subj("127.0.0.1"),
            ],
        );
        std::fs::write(p("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &p("server.csr"),
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &p("server.pem"),
                "-extfile",
                &p("san.cnf"),
            ],
        );
        // The broker may run as another user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        Certs { dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

/// Starts (again) the RabbitMQ TLS listener on 5671 with these certificates.
fn rabbitmq_tls_listener(certs: &Certs) {
    let _ = Command::new("rabbitmqctl")
        .args([
            "eval",
            &format!("rabbit_networking:stop_tcp_listener({TLS_PORT})."),
        ])
        .output();
    let opts = format!(
        "[{{certfile,\"{}\"}},{{keyfile,\"{}\"}},{{cacertfile,\"{}\"}},{{verify,verify_none}},{{fail_if_no_peer_cert,false}}]",
        certs.path("server.pem").display(),
        certs.path("server.key").display(),
        certs.path("ca.pem").display()
    );
    let said = run(
        "rabbitmqctl",
        &[
            "eval",
            &format!("rabbit_networking:start_ssl_listener({TLS_PORT}, {opts}, 1)."),
        ],
    );
    assert!(
        said.trim() == "ok",
        "the TLS listener did not start: {said}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker of this test's own behind a TLS endpoint: killed with the test.
struct TlsKafka {
    children: Vec<Child>,
    bootstrap: String,
}

impl TlsKafka {
    fn start(certs: &Certs) -> TlsKafka {
        let (inner, outer) = (free_port(), free_port());
        let tansu = std::env::var("MQWATCH_TANSU").unwrap_or_else(|_| {
            format!(
                "{}/.local/share/mqwatch/tansu/bin/tansu",
                std::env::var("HOME").unwrap()
            )
        });
        let broker = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{inner}"),
            ])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{outer}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tansu broker (.ci/services installs it)");
        let endpoint = Command::new("socat")
            .arg(format!(
                "openssl-listen:{outer},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                certs.path("server.pem").display(),
                certs.path("server.key").display()
            ))
            .arg(format!("tcp:127.0.0.1:{inner}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (.ci/services installs it)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", outer)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the TLS endpoint never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsKafka {
            children: vec![broker, endpoint],
            bootstrap: format!("127.0.0.1:{outer}"),
        }
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A RabbitMQ user with a password nobody else knows, removed with the test.
struct RabbitUser {
    name: String,
    password: String,
}

impl RabbitUser {
    fn add() -> RabbitUser {
        let name = unique("mqwatch-tls");
        let password = format!(
            "pw-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ 0x5eed_cafe
        );
        run("rabbitmqctl", &["add_user", &name, &password]);
        run(
            "rabbitmqctl",
            &["set_permissions", "-p", "/", &name, ".*", ".*", ".*"],
        );
        run("rabbitmqctl", &["set_user_tags", &name, "monitoring"]);
        RabbitUser { name, password }
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

struct Setup<'a> {
    user: &'a RabbitUser,
    kafka: &'a str,
    queue: &'a str,
    exchange: &'a str,
    alerts_topic: &'a str,
    token_file: &'a Path,
    hook: &'a str,
}

fn config(s: &Setup<'_>, ca: &Path) -> String {
    let Setup {
        user,
        kafka,
        queue,
        exchange,
        alerts_topic,
        token_file,
        hook,
    } = *s;
    format!(
        "stdout = true\n\
         [engine]\ninterval = \"5s\"\nlateness = \"2s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\nsilences_file = \"\"\ntoken = \"${{env:MQWATCH_TEST_API_TOKEN}}\"\n\
         [rabbitmq]\nuri = \"amqps://{}:${{env:MQWATCH_TEST_AMQP_PASSWORD}}@127.0.0.1:{TLS_PORT}/%2f\"\n\
         include = [{:?}]\nalerts_exchange = \"{exchange}\"\npoll_interval = \"2s\"\n\
         [rabbitmq.tls]\nca_file = {:?}\n\
         [kafka]\nbootstrap_servers = \"{kafka}\"\ncluster = \"tls-kafka\"\npoll_interval = \"2s\"\nalerts_topic = \"{alerts_topic}\"\n\
         [kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {:?}\n\
         \"sasl.password\" = \"${{file:{}}}\"\n\"debug\" = \"security,broker,conf\"\n\
         [webhook]\nurl = \"{hook}\"\nheaders = {{ Authorization = \"Bearer ${{file:{}}}\" }}\n",
        user.name,
        format!("^{}$", regex::escape(queue)),
        ca.display().to_string(),
        ca.display().to_string(),
        token_file.display(),
        token_file.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_and_kafka_over_tls_work_with_secrets_from_env_and_files_that_never_reach_the_output()
{
    let certs = Certs::make();
    rabbitmq_tls_listener(&certs);
    let kafka = TlsKafka::start(&certs);
    let user = RabbitUser::add();
    let api_token = format!("tok-{}", user.password);
    let file_secret = format!("file-{}", user.password);
    let token_file = certs.path("token");
    std::fs::write(&token_file, format!("{file_secret}\n")).unwrap();
    let (queue, exchange, topic) = (
        unique("risk.scoring"),
        unique("mqwatch.alerts"),
        unique("tls.alerts"),
    );
    let (_sub, mut alerts) = subscribe(PLAIN, &exchange, "#").await.unwrap();
    let mut work = Workload::start(PLAIN, &queue, 30.0).await.unwrap();
    work.add_consumers(2, ConsumerMode::Ack, 20).await.unwrap();
    let env = [
        ("MQWATCH_TEST_AMQP_PASSWORD", user.password.as_str()),
        ("MQWATCH_TEST_API_TOKEN", api_token.as_str()),
        ("MQWATCH_LOG", "debug"),
    ];
    let hook = Receiver::start(200);
    let setup = Setup {
        user: &user,
        kafka: &kafka.bootstrap,
        queue: &queue,
        exchange: &exchange,
        alerts_topic: &topic,
        token_file: &token_file,
        hook: &hook.url,
    };
    let text = config(&setup, &certs.path("ca.pem"));
    assert!(
        !text.contains(&user.password) && !text.contains(&file_secret),
        "the TOML holds no secret"
    );
    let mut engine = Run::start(&text, &[], &env);
    engine.wait_for_stderr(
        "connected broker=rabbitmq alert exchange",
        Duration::from_secs(30),
    );
    engine.wait_for_stderr("connected broker=kafka lag poller", Duration::from_secs(30));
    let kafka_sub = KafkaSubscriber::start_with(
        &KafkaConfig {
            bootstrap_servers: kafka.bootstrap.clone(),
            alerts_topic: topic.clone(),
            properties: [
                ("security.protocol".to_string(), "SSL".to_string()),
                (
                    "ssl.ca.location".to_string(),
                    certs.path("ca.pem").display().to_string(),
                ),
            ]
            .into(),
            ..Default::default()
        },
        &unique("risk-team"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    work.remove_consumers().await;
    let fired = loop {
        let (_, a) = tokio::time::timeout(Duration::from_secs(60), alerts.recv())
            .await
            .unwrap_or_else(|_| panic!("no alert over amqps within 60 s:\n{}", engine.stderr()))
            .unwrap();
        if a.labels.get("queue") == Some(&queue) {
            break a;
        }
    };
    assert_eq!(
        (fired.kind, fired.state),
        (AlertKind::ConsumerStall, AlertState::Firing)
    );
    let over_kafka = kafka_sub
        .alerts
        .recv_timeout(Duration::from_secs(30))
        .expect("the same alert over Kafka TLS");
    assert_eq!(over_kafka.1.id, fired.id);

    // The API, asked with the token, shows no secret either.
    let port: u16 = engine
        .stderr()
        .split("dashboard on http://127.0.0.1:")
        .nth(1)
        .and_then(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap();
    let mut api = String::new();
    for path in ["/api/v1/status", "/api/v1/alerts", "/metrics"] {
        api += &ureq::get(format!("http://127.0.0.1:{port}{path}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
    }
    engine.signal("TERM");
    let (code, stdout, stderr) = engine.exit_within(Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        hook.authorization()
            .contains(&format!("Bearer {file_secret}")),
        "the webhook got the token from the file"
    );
    assert!(
        stderr.contains("librdkafka"),
        "the client libraries logged at debug"
    );
    for secret in [&user.password, &api_token, &file_secret] {
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr), ("the API", &api)] {
            assert!(!text.contains(secret.as_str()), "a secret reached {what}");
        }
    }

    // A CA that did not sign the broker's certificate: refused, said, and still no secret.
    let other = Certs::make();
    let refused = Run::start(
        &config(&setup, &other.path("ca.pem")),
        &["--for", "12s"],
        &env,
    );
    let (_, stdout, stderr) = refused.exit_within(Duration::from_secs(60));
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the failure names the certificate:\n{stderr}"
    );
    for secret in [&user.password, &api_token, &file_secret] {
        assert!(
            !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
            "a secret reached the output of the refused run"
        );
    }
    work.stop().await;
}
