//! Loki's push endpoint, as far as sonde uses it: the one fake of the suite (Loki
//! does not run here). Every request is kept with its headers and body and answered
//! 204, over plain TCP or TLS, on a port of the test's choosing so that a test can
//! take Loki away and bring it back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tls::rustls;

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Push {
    /// Header names in lowercase, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Push {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Requests in arrival order, kept across a receiver's restarts when shared.
pub type Pushes = Arc<Mutex<Vec<Push>>>;

pub struct LokiReceiver {
    pub port: u16,
    pub pushes: Pushes,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LokiReceiver {
    /// Plain HTTP on a free port.
    pub fn start() -> LokiReceiver {
        Self::listen(0, Pushes::default(), None)
    }

    /// Plain HTTP on `port` (0: a free one), adding to `pushes`.
    pub fn start_on(port: u16, pushes: Pushes) -> LokiReceiver {
        Self::listen(port, pushes, None)
    }

    /// HTTPS with `server`'s certificate, on a free port.
    pub fn start_tls(server: Arc<rustls::ServerConfig>) -> LokiReceiver {
        Self::listen(0, Pushes::default(), Some(server))
    }

    fn listen(port: u16, pushes: Pushes, tls: Option<Arc<rustls::ServerConfig>>) -> LokiReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = channel::<()>();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (store, open) = (pushes.clone(), conns.clone());
        let thread = std::thread::spawn(move || loop {
            if stopped.try_recv().is_ok() {
                return;
            }
            let Ok((s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            open.lock().unwrap().push(s.try_clone().unwrap());
            let (store, tls) = (store.clone(), tls.clone());
            std::thread::spawn(move || match tls {
                None => serve(s, &store),
                Some(config) => {
                    if let Ok(conn) = rustls::ServerConnection::new(config) {
                        serve(rustls::StreamOwned::new(conn, s), &store);
                    }
                }
            });
        });
        LokiReceiver {
            port,
            pushes,
            conns,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Closes the port and every open connection: Loki is down.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn count(&self) -> usize {
        self.pushes.lock().unwrap().len()
    }

    /// The first push `ok` accepts, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, ok: impl Fn(&Push) -> bool) -> Push {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(p) = self.pushes.lock().unwrap().iter().find(|p| ok(p)) {
                return p.clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no such push within {timeout:?}: {:?}",
            self.pushes.lock().unwrap()
        );
    }

    /// Every pushed line (parsed as JSON) with its stream labels, in arrival order.
    pub fn lines(&self) -> Vec<(serde_json::Value, serde_json::Value)> {
        let mut out = Vec::new();
        for push in self.pushes.lock().unwrap().iter() {
            let body = push.json();
            for stream in body["streams"].as_array().into_iter().flatten() {
                for v in stream["values"].as_array().into_iter().flatten() {
                    let line =
                        serde_json::from_str(v[1].as_str().unwrap_or_default()).unwrap_or_default();
                    out.push((stream["stream"].clone(), line));
                }
            }
        }
        out
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The requests of one (keep-alive) connection.
fn serve<S: Read + Write>(s: S, store: &Mutex<Vec<Push>>) {
    let mut r = BufReader::new(s);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        store.lock().unwrap().push(Push {
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let w = r.get_mut();
        if w.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .and_then(|()| w.flush())
            .is_err()
        {
            return;
        }
    }
}
