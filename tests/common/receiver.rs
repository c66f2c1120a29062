//! A webhook receiver for tests: an HTTP server on a free loopback port that answers every
//! request with the status it is told to, and keeps the bodies of the POSTs it accepted (2xx).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

pub struct Receiver {
    pub url: String,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<Vec<String>>>,
    authorization: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(status));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let authorization = Arc::new(Mutex::new(Vec::new()));
        let (s, a, h) = (status.clone(), accepted.clone(), authorization.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (s, a, h) = (s.clone(), a.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &s, &a, &h));
            }
        });
        Receiver {
            url,
            status,
            accepted,
            authorization,
        }
    }

    /// What it answers from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The `Authorization` headers of the requests it got.
    pub fn authorization(&self) -> Vec<String> {
        self.authorization.lock().unwrap().clone()
    }

    /// The bodies of the POSTs it accepted, as JSON.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }
}

/// Answers the requests of one keep-alive connection until it closes.
fn serve(
    conn: std::net::TcpStream,
    status: &AtomicU16,
    accepted: &Mutex<Vec<String>>,
    authorization: &Mutex<Vec<String>>,
) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("authorization") {
                    authorization.lock().unwrap().push(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        if request.starts_with("POST") && (200..300).contains(&code) {
            accepted
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).to_string());
        }
        let reply = format!("HTTP/1.1 {code} Status\r\ncontent-length: 0\r\n\r\n");
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
