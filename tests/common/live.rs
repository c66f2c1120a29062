//! `mqwatch run` as a child process: its stdout lines as they come, its stderr as a whole.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `mqwatch run`, its stdout lines as they come and its stderr as a whole.
pub struct Run {
    pub child: Child,
    pub lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Run {
    /// Runs `mqwatch run` with `config`; unless it says otherwise, it serves HTTP on a free port
    /// (runs of parallel tests would all want the default one).
    pub fn start(config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.toml");
        let mut config = config.to_string();
        if !config.contains("[http]") {
            config.push_str("\n[http]\nlisten = \"127.0.0.1:0\"\nsilences_file = \"\"\n");
        }
        if !config.contains("[state]") {
            // Parallel runs must not share (or resume from) one state directory.
            let state = dir.path().join("state");
            config.push_str(&format!(
                "\n[state]\ndir = {:?}\n",
                state.display().to_string()
            ));
        }
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqwatch"))
            .args(["run", "--config", path.to_str().unwrap()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let all = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let all = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Run {
            child,
            lines,
            stderr,
            stdout,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The next alert on stdout, while the process still runs.
    pub fn next_alert(&mut self, within: Duration) -> serde_json::Value {
        match self.lines.recv_timeout(within) {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(RecvTimeoutError::Timeout) => {
                let err = self.stderr();
                self.child.kill().ok();
                panic!("no alert on stdout within {within:?}; stderr:\n{err}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("stdout closed; stderr:\n{}", self.stderr())
            }
        }
    }

    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) {
        let t = Instant::now();
        while !self.stderr().contains(needle) {
            if t.elapsed() > within {
                let err = self.stderr();
                self.child.kill().ok();
                panic!("stderr never said {needle:?} within {within:?}:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} failed");
    }

    /// Waits for the exit, killing the process (and failing) if it takes longer than `within`.
    pub fn exit_within(mut self, within: Duration) -> (i32, String, String) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads see the end of both pipes.
                std::thread::sleep(Duration::from_millis(200));
                return (
                    status.code().unwrap_or(-1),
                    self.stdout.lock().unwrap().clone(),
                    self.stderr(),
                );
            }
            if t.elapsed() > within {
                self.child.kill().ok();
                panic!("still running {within:?} later; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails part-way must not leave its `mqwatch run` behind.
impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
