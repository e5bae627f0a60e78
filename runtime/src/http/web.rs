//! TLS and authentication of the endpoints, from a Prometheus web configuration file:
//! the format of the exporter toolkit (node_exporter's `--web.config.file`), so the
//! file an SRE already has for node_exporter works unchanged.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: sonde.crt            # relative paths are relative to this file
//!   key_file: sonde.key
//!   client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
//!   client_ca_file: clients-ca.crt
//!   client_allowed_sans: [prometheus.monitoring.svc]   # DNS names or IPs
//!   min_version: TLS12              # TLS12 (default) or TLS13
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 only
//!   prefer_server_cipher_suites: true
//!   curve_preferences: [X25519, CurveP256]
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:                 # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')
//!   prometheus: $2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG
//! rate_limit:                        # one token bucket for all requests; past it 429
//!   interval: 100ms
//!   burst: 20
//! ```
//!
//! Differences from the toolkit: HTTP/1.1 only (`http2` is accepted and ignored);
//! TLS 1.0 and 1.1 are refused (rustls does not have them); `client_allowed_sans`
//! matches DNS names and IP addresses (not e-mail or URI SANs); `/healthz` and
//! `/readyz` answer without basic auth (Kubernetes probes), TLS still applies; the
//! file is read at start and on every reload (SIGHUP, a config change), not on every
//! request.
//!
//! ```
//! use sonde::http::web::WebConfig;
//! let cfg = WebConfig::parse("web.yml", "basic_auth_users:\n  alice: $2y$04$abcdefghijklmnopqrstuuH7xCOUbzMZy6.UYwhbuD.dvYMnD5HYy\n").unwrap();
//! assert!(cfg.tls_server_config.is_none());
//! let err = WebConfig::parse("web.yml", "tls_server_config:\n  min_version: TLS10\n").unwrap_err();
//! assert!(err.to_string().contains("tls_server_config.min_version"), "{err}");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

/// A web configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    pub http_server_config: HttpServerConfig,
    pub basic_auth_users: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth_type: String,
    pub client_ca_file: PathBuf,
    pub client_allowed_sans: Vec<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Accepted for compatibility; sonde serves HTTP/1.1.
    pub http2: Option<bool>,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub interval: Duration,
    pub burst: u32,
}

/// The response headers a web config may add (as the exporter toolkit allows).
const ALLOWED_HEADERS: &[&str] = &[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        WebConfig::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks what can be checked without reading other files.
    pub fn parse(file: &str, text: &str) -> Result<WebConfig, WebConfigError> {
        let invalid = |path: &str, message: String| WebConfigError::Invalid {
            file: file.to_string(),
            path: if path.is_empty() {
                ".".into()
            } else {
                path.into()
            },
            message,
        };
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| invalid("", e.to_string()))?;
        let value = match value {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v,
        };
        let cfg: WebConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            invalid(&path, e.into_inner().to_string())
        })?;
        if let Some(tls) = &cfg.tls_server_config {
            for (key, v) in [
                ("min_version", &tls.min_version),
                ("max_version", &tls.max_version),
            ] {
                if let Some(v) = v {
                    version(v).map_err(|m| invalid(&format!("tls_server_config.{key}"), m))?;
                }
            }
            client_auth(&tls.client_auth_type)
                .map_err(|m| invalid("tls_server_config.client_auth_type", m))?;
            for (i, san) in tls.client_allowed_sans.iter().enumerate() {
                ServerName::try_from(san.as_str()).map_err(|_| {
                    invalid(
                        &format!("tls_server_config.client_allowed_sans[{i}]"),
                        format!("`{san}` is not a DNS name or an IP address (e-mail and URI SANs are not supported)"),
                    )
                })?;
            }
        }
        for name in cfg.http_server_config.headers.keys() {
            if !ALLOWED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                return Err(invalid(
                    &format!("http_server_config.headers.{name}"),
                    format!(
                        "not a header that can be set; allowed: {}",
                        ALLOWED_HEADERS.join(", ")
                    ),
                ));
            }
        }
        for (user, hash) in &cfg.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(
                    &format!("basic_auth_users.{user}"),
                    "not a bcrypt hash (like $2y$10$...); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`".into(),
                ));
            }
        }
        if let Some(r) = &cfg.rate_limit {
            if !r.interval.is_zero() && r.burst == 0 {
                return Err(invalid(
                    "rate_limit.burst",
                    "must be at least 1 when rate_limit.interval is set".into(),
                ));
            }
        }
        Ok(cfg)
    }
}

fn version(v: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "{v} is not supported (insecure); use TLS12 or TLS13"
        )),
        _ => Err(format!("unknown version `{v}`; use TLS12 or TLS13")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

fn client_auth(v: &str) -> Result<ClientAuth, String> {
    Ok(match v {
        "" | "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Request,
        "RequireAnyClientCert" => ClientAuth::RequireAny,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(format!(
                "unknown `{other}`; use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ))
        }
    })
}

/// The [`WebSecurity`] in force, swapped whole on a reload; connections take the
/// current one when they start, requests when they arrive.
#[derive(Debug, Clone, Default)]
pub struct SecurityCell(Arc<std::sync::RwLock<Option<Arc<WebSecurity>>>>);

impl SecurityCell {
    pub fn new(security: Option<WebSecurity>) -> Self {
        SecurityCell(Arc::new(std::sync::RwLock::new(security.map(Arc::new))))
    }

    pub fn get(&self) -> Option<Arc<WebSecurity>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, security: Option<WebSecurity>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = security.map(Arc::new);
    }
}

/// What the server enforces, built from a [`WebConfig`] (files read).
pub struct WebSecurity {
    /// Where it came from, for logs.
    pub file: String,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// DNS names or IPs one of which a client certificate must carry.
    allowed_sans: Vec<ServerName<'static>>,
    auth: Option<BasicAuth>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    rate: Option<Mutex<Bucket>>,
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSecurity")
            .field("file", &self.file)
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.auth.is_some())
            .finish()
    }
}

impl WebSecurity {
    /// Reads the file and what it names (certificates, keys).
    pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
        let cfg = WebConfig::load(path)?;
        WebSecurity::build(&cfg, &path.display().to_string(), path.parent())
    }

    /// `dir`: where relative file names are looked up.
    pub fn build(
        cfg: &WebConfig,
        file: &str,
        dir: Option<&Path>,
    ) -> Result<WebSecurity, WebConfigError> {
        let invalid = |path: &str, message: String| WebConfigError::Invalid {
            file: file.to_string(),
            path: path.into(),
            message,
        };
        let tls = match &cfg.tls_server_config {
            Some(t) => Some(tls_acceptor(t, dir).map_err(|(p, m)| invalid(&p, m))?),
            None => None,
        };
        let allowed_sans = cfg
            .tls_server_config
            .iter()
            .flat_map(|t| t.client_allowed_sans.iter())
            .filter_map(|s| ServerName::try_from(s.clone()).ok())
            .collect();
        let headers = cfg
            .http_server_config
            .headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                    invalid(&format!("http_server_config.headers.{k}"), e.to_string())
                })?;
                let value = HeaderValue::from_str(v).map_err(|e| {
                    invalid(&format!("http_server_config.headers.{k}"), e.to_string())
                })?;
                Ok((name, value))
            })
            .collect::<Result<_, _>>()?;
        let auth = (!cfg.basic_auth_users.is_empty()).then(|| BasicAuth {
            users: cfg.basic_auth_users.clone(),
            verified: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(BCRYPT_AT_ONCE),
        });
        let rate = cfg
            .rate_limit
            .as_ref()
            .filter(|r| !r.interval.is_zero())
            .map(|r| {
                Mutex::new(Bucket {
                    tokens: f64::from(r.burst),
                    burst: f64::from(r.burst),
                    per_token: r.interval,
                    last: Instant::now(),
                })
            });
        Ok(WebSecurity {
            file: file.to_string(),
            tls,
            allowed_sans,
            auth,
            headers,
            rate,
        })
    }

    pub fn basic_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// Whether a client's certificate chain (leaf first) carries an allowed SAN;
    /// true when none are configured.
    pub fn client_allowed(&self, certs: Option<&[CertificateDer<'_>]>) -> bool {
        if self.allowed_sans.is_empty() {
            return true;
        }
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        self.allowed_sans
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
    }

    /// Whether the `Authorization` header names a user with the right password.
    pub async fn authorized(&self, header: Option<&HeaderValue>) -> bool {
        match &self.auth {
            None => true,
            Some(auth) => auth.check(header).await,
        }
    }

    /// Takes a token; false when the rate limit is exceeded.
    pub fn admit(&self) -> bool {
        let Some(rate) = &self.rate else { return true };
        let mut b = rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() / b.per_token.as_secs_f64();
        b.tokens = (b.tokens + refill).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Bucket {
    tokens: f64,
    burst: f64,
    per_token: Duration,
    last: Instant,
}

/// bcrypt runs this many at once (each ~70 ms at cost 10); the rest wait.
const BCRYPT_AT_ONCE: usize = 2;

struct BasicAuth {
    /// User -> bcrypt hash.
    users: BTreeMap<String, String>,
    /// User -> the password that last matched its hash: bcrypt once per user, not
    /// once per scrape.
    verified: Mutex<HashMap<String, Vec<u8>>>,
    hashing: tokio::sync::Semaphore,
}

impl BasicAuth {
    async fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .is_some_and(|p| constant_time_eq(p, password.as_bytes()));
        if cached {
            return true;
        }
        // An unknown user costs a bcrypt like a known one: no timing difference.
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
            bcrypt::verify(pw, hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && known;
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user, password.into_bytes());
        }
        ok
    }
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("sonde: no such user", 10).unwrap_or_default())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Basic base64(user:password)`.
fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    use base64::Engine as _;
    let text = v.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn pem_source(inline: &str, file: &Path, dir: Option<&Path>) -> Option<Result<Vec<u8>, String>> {
    if !inline.is_empty() {
        return Some(Ok(inline.as_bytes().to_vec()));
    }
    if file.as_os_str().is_empty() {
        return None;
    }
    let path = match dir {
        Some(d) if file.is_relative() => d.join(file),
        _ => file.to_path_buf(),
    };
    Some(std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display())))
}

/// The ring provider, cut down to the configured suites and curves.
fn provider(t: &TlsServerConfig) -> Result<CryptoProvider, (String, String)> {
    // ring: builds with cc alone (aws-lc-rs needs a much larger C build); it has no
    // post-quantum key exchange, hence the deprecation.
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for (i, name) in t.cipher_suites.iter().enumerate() {
            let found = p
                .cipher_suites
                .iter()
                .find(|s| format!("{:?}", s.suite()) == *name)
                .copied()
                .ok_or_else(|| {
                    (
                        format!("tls_server_config.cipher_suites[{i}]"),
                        format!(
                            "unknown or unsupported `{name}`; supported: {}",
                            p.cipher_suites
                                .iter()
                                .map(|s| format!("{:?}", s.suite()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            wanted.push(found);
        }
        // TLS 1.3 suites are not configurable (as in Go): always kept.
        let tls13 = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied();
        let mut suites: Vec<_> = wanted;
        for s in tls13 {
            if !suites.iter().any(|w| w.suite() == s.suite()) {
                suites.push(s);
            }
        }
        p.cipher_suites = suites;
    }
    if !t.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for (i, name) in t.curve_preferences.iter().enumerate() {
            let want = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "CurveP521" => rustls::NamedGroup::secp521r1,
                other => {
                    return Err((
                        format!("tls_server_config.curve_preferences[{i}]"),
                        format!("unknown curve `{other}`; use X25519, CurveP256 or CurveP384"),
                    ))
                }
            };
            match p.kx_groups.iter().find(|g| g.name() == want) {
                Some(g) => groups.push(*g),
                None => {
                    return Err((
                        format!("tls_server_config.curve_preferences[{i}]"),
                        format!("`{name}` is not supported; use X25519, CurveP256 or CurveP384"),
                    ))
                }
            }
        }
        p.kx_groups = groups;
    }
    Ok(p)
}

fn tls_acceptor(
    t: &TlsServerConfig,
    dir: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, (String, String)> {
    let at = |k: &str| format!("tls_server_config.{k}");
    let cert_pem = pem_source(&t.cert, &t.cert_file, dir)
        .ok_or_else(|| (at("cert_file"), "missing: give cert_file (or cert)".into()))?
        .map_err(|m| (at("cert_file"), m))?;
    let key_pem = pem_source(&t.key, &t.key_file, dir)
        .ok_or_else(|| (at("key_file"), "missing: give key_file (or key)".into()))?
        .map_err(|m| (at("key_file"), m))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| (at("cert_file"), format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err((
            at("cert_file"),
            "no certificate in it (PEM expected)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| (at("key_file"), format!("no PEM private key in it: {e}")))?;
    let provider = Arc::new(provider(t)?);
    let min = t
        .min_version
        .as_deref()
        .map(version)
        .transpose()
        .map_err(|m| (at("min_version"), m))?;
    let max = t
        .max_version
        .as_deref()
        .map(version)
        .transpose()
        .map_err(|m| (at("max_version"), m))?;
    let order = |v: &rustls::SupportedProtocolVersion| u8::from(v == &rustls::version::TLS13);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| min.is_none_or(|m| order(v) >= order(m)))
            .filter(|v| max.is_none_or(|m| order(v) <= order(m)))
            .collect();
    if versions.is_empty() {
        return Err((at("min_version"), "min_version is above max_version".into()));
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| (at("min_version"), e.to_string()))?;
    let mode = client_auth(&t.client_auth_type).map_err(|m| (at("client_auth_type"), m))?;
    let ca = pem_source(&t.client_ca, &t.client_ca_file, dir)
        .transpose()
        .map_err(|m| (at("client_ca_file"), m))?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match mode {
        ClientAuth::None => None,
        ClientAuth::Request | ClientAuth::RequireAny => Some(Arc::new(AnyClientCert {
            mandatory: mode == ClientAuth::RequireAny,
            provider: provider.clone(),
        })),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let ca = ca.ok_or_else(|| {
                (
                    at("client_ca_file"),
                    format!(
                        "missing: {} needs the CA that signs client certificates",
                        t.client_auth_type
                    ),
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                let c =
                    c.map_err(|e| (at("client_ca_file"), format!("not a PEM certificate: {e}")))?;
                roots.add(c).map_err(|e| {
                    (
                        at("client_ca_file"),
                        format!("unusable CA certificate: {e}"),
                    )
                })?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let b = if mode == ClientAuth::VerifyIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            Some(
                b.build()
                    .map_err(|e| (at("client_ca_file"), e.to_string()))?,
            )
        }
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        (
            at("key_file"),
            format!("the key does not go with the certificate, or is unusable: {e}"),
        )
    })?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (or
/// required) but not checked against any CA; its signature over the handshake is.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolkit_example_parses() {
        let cfg = WebConfig::parse(
            "web.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n  \
             bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m\n\
             rate_limit:\n  interval: 1s\n  burst: 20\n",
        )
        .unwrap();
        let tls = cfg.tls_server_config.as_ref().unwrap();
        assert_eq!(tls.cert_file, Path::new("server.crt"));
        assert_eq!(cfg.basic_auth_users.len(), 2);
        // Files relative to the web config, named in the error.
        let e = WebSecurity::build(&cfg, "/etc/sonde/web.yml", Some(Path::new("/etc/sonde")))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "/etc/sonde/web.yml: tls_server_config.cert_file: cannot read /etc/sonde/server.crt: "
            ),
            "{e}"
        );
    }

    #[test]
    fn mistakes_name_their_key() {
        let err = |text: &str| WebConfig::parse("w.yml", text).unwrap_err().to_string();
        let e = err("tls_server_config:\n  certfile: x\n");
        assert!(
            e.contains("w.yml: tls_server_config") && e.contains("unknown field `certfile`"),
            "{e}"
        );
        assert!(
            err("tls_server_config:\n  min_version: TLS11\n").contains("TLS11 is not supported")
        );
        assert!(err("tls_server_config:\n  client_auth_type: Sometimes\n")
            .contains("tls_server_config.client_auth_type: unknown `Sometimes`"));
        assert!(err("basic_auth_users:\n  bob: hunter2\n")
            .contains("basic_auth_users.bob: not a bcrypt hash"));
        assert!(err("http_server_config:\n  headers:\n    Server: x\n")
            .contains("http_server_config.headers.Server: not a header that can be set"));
        assert!(
            err("tls_server_config:\n  client_allowed_sans: [\"mailto:a@b\"]\n")
                .contains("client_allowed_sans[0]")
        );
        assert!(err("rate_limit:\n  interval: 1s\n  burst: 0\n").contains("rate_limit.burst"));
        assert_eq!(WebConfig::parse("w.yml", "").unwrap(), WebConfig::default());
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let cfg =
            WebConfig::parse("w.yml", &format!("basic_auth_users:\n  prom: \"{hash}\"\n")).unwrap();
        let sec = WebSecurity::build(&cfg, "w.yml", None).unwrap();
        let header = |u: &str, p: &str| {
            use base64::Engine as _;
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ))
            .unwrap()
        };
        assert!(!sec.authorized(None).await);
        assert!(!sec.authorized(Some(&header("prom", "wrong"))).await);
        assert!(!sec.authorized(Some(&header("nobody", "s3cret"))).await);
        assert!(
            !sec.authorized(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert!(sec.authorized(Some(&header("prom", "s3cret"))).await);
        // Cached: the same answer, and a wrong password still fails.
        assert!(sec.authorized(Some(&header("prom", "s3cret"))).await);
        assert!(!sec.authorized(Some(&header("prom", "s3cret2"))).await);
    }

    #[test]
    fn rate_limit_is_a_token_bucket() {
        let cfg = WebConfig::parse("w.yml", "rate_limit:\n  interval: 1h\n  burst: 3\n").unwrap();
        let sec = WebSecurity::build(&cfg, "w.yml", None).unwrap();
        assert_eq!((0..5).filter(|_| sec.admit()).count(), 3);
    }
}
