//! A scraper as Prometheus is one: HTTP/1.1 GETs over one kept-alive connection,
//! timed from the request's first byte to the response's last, plus the few reads
//! of the exposition text the benchmarks need (samples, sums of a metric).
//!
//! Hand-written on `std::net` so the client adds as little as possible to what is
//! measured: no compression is asked for (Prometheus asks for gzip by default), so
//! payload sizes are the uncompressed text.
//!
//! ```no_run
//! let mut c = Client::new("127.0.0.1:9102".parse()?);
//! let r = c.get("/metrics", Some(OPENMETRICS))?;
//! println!("{} bytes, {} samples in {:?}", r.body.len(), samples(&r.text()), r.took);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The Accept header Prometheus sends when it prefers OpenMetrics.
pub const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
/// Longest a response may take before the scrape counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One answered request.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// From writing the request to reading the body's last byte.
    pub took: Duration,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client keeping its connection open between requests (reconnecting when the
/// server closes it), as Prometheus does between scrapes.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far (1 when keep-alive held throughout).
    pub connects: u64,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// GET `path`, with `accept` as the Accept header when given. The connect time
    /// of a new connection is not part of `took`.
    pub fn get(&mut self, path: &str, accept: Option<&str>) -> anyhow::Result<Response> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sonde-bench\r\nAccept: {}\r\n\r\n",
            self.addr,
            accept.unwrap_or("*/*")
        );
        // A kept-alive connection the server closed meanwhile fails on first use:
        // retry once on a fresh one.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let conn = match self.conn.take() {
                Some(c) => c,
                None => self.connect()?,
            };
            match exchange(conn, &request) {
                Ok((response, conn)) => {
                    self.conn = conn;
                    return Ok(response);
                }
                Err(_) if reused && attempt == 0 => continue,
                Err(e) => return Err(e).with_context(|| format!("GET http://{}{path}", self.addr)),
            }
        }
        bail!("GET http://{}{path}: no answer", self.addr)
    }

    fn connect(&mut self) -> anyhow::Result<BufReader<TcpStream>> {
        let s = TcpStream::connect_timeout(&self.addr, TIMEOUT)
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        self.connects += 1;
        Ok(BufReader::with_capacity(256 * 1024, s))
    }
}

/// Sends one request and reads its response; hands the connection back when the
/// server keeps it open.
fn exchange(
    mut conn: BufReader<TcpStream>,
    request: &str,
) -> anyhow::Result<(Response, Option<BufReader<TcpStream>>)> {
    let start = Instant::now();
    conn.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        bail!("connection closed before the response");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    let mut content_type = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-type" => content_type = value.to_string(),
            _ => {}
        }
    }
    let mut body = Vec::with_capacity(length.unwrap_or(64 * 1024));
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            conn.read_exact(&mut body[at..])?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
        close = true;
    }
    let took = start.elapsed();
    let response = Response {
        status,
        content_type,
        body,
        took,
    };
    Ok((response, (!close).then_some(conn)))
}

/// Sample lines of an exposition (everything but comments, blank lines, `# EOF`).
pub fn samples(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Sum of the samples of `metric` (exact name, no suffix) whose label text
/// satisfies `keep`; None when the metric has no sample at all.
pub fn metric_sum(text: &str, metric: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(metric) else {
            continue;
        };
        let labels = match rest.as_bytes().first() {
            Some(b'{') => rest.split_once('}').map_or("", |(l, _)| l),
            Some(b' ') => "",
            _ => continue,
        };
        if !keep(labels) {
            continue;
        }
        let Some(value) = rest
            .rsplit('}')
            .next()
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        found = true;
        total += value;
    }
    found.then_some(total)
}

/// Latencies of a series of scrapes, and what they returned.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub took: Vec<Duration>,
    pub bytes: usize,
    pub samples: usize,
    pub content_type: String,
    pub connects: u64,
}

impl Latencies {
    /// `n` scrapes of `/metrics` one after the other on one client.
    pub fn measure(c: &mut Client, accept: Option<&str>, n: usize) -> anyhow::Result<Latencies> {
        let connects = c.connects;
        let mut l = Latencies::default();
        for _ in 0..n {
            let r = c.get("/metrics", accept)?;
            if r.status != 200 {
                bail!("/metrics answered {}", r.status);
            }
            l.add(&r);
        }
        l.connects = c.connects - connects;
        Ok(l)
    }

    pub fn add(&mut self, r: &Response) {
        self.took.push(r.took);
        self.bytes = r.body.len();
        self.samples = samples(&String::from_utf8_lossy(&r.body));
        self.content_type = r.content_type.clone();
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.took.is_empty() {
            return None;
        }
        let mut v = self.took.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Some(v[rank.min(v.len()) - 1].as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP sonde_probe_records_total Records.
# TYPE sonde_probe_records_total counter
sonde_probe_records_total{node=\"b\",script=\"tcp_reset\",program=\"tcp_reset\"} 12
sonde_probe_records_total{node=\"b\",script=\"packet_loss\",program=\"packet_loss\"} 3
sonde_probe_records_total_other 5
sonde_up 1
";

    #[test]
    fn reads_exposition_text() {
        assert_eq!(samples(TEXT), 4);
        assert_eq!(
            metric_sum(TEXT, "sonde_probe_records_total", |_| true),
            Some(15.0)
        );
        assert_eq!(
            metric_sum(TEXT, "sonde_probe_records_total", |l| l
                .contains("script=\"tcp_reset\"")),
            Some(12.0)
        );
        assert_eq!(metric_sum(TEXT, "sonde_up", |_| true), Some(1.0));
        assert_eq!(metric_sum(TEXT, "sonde_down", |_| true), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latencies {
            took: (1..=100).map(Duration::from_millis).collect(),
            ..Latencies::default()
        };
        assert_eq!(l.percentile_ms(50.0), Some(50.0));
        assert_eq!(l.percentile_ms(99.0), Some(99.0));
        assert_eq!(l.percentile_ms(100.0), Some(100.0));
    }
}
