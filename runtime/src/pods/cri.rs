//! CRI: the container runtime's gRPC API (containerd, CRI-O), the subset pod
//! resolution needs.
//!
//! Three calls of `runtime.v1.RuntimeService`: `ListPodSandbox`, `PodSandboxStatus`
//! (verbose: its `info` JSON has the sandbox's pid and network namespace path) and
//! `ListContainers`. gRPC is plain HTTP/2 over the runtime's unix socket: a POST to
//! `/runtime.v1.RuntimeService/<Method>` whose body is the protobuf message behind a
//! 5-byte prefix (compressed flag, big-endian length), the status in the trailers.
//! [`Client::call`] does that for any message pair, so tests can create sandboxes
//! with the same client.
//!
//! The messages below are the fields sonde reads from the CRI v1 `api.proto`
//! (k8s.io/cri-api `pkg/apis/runtime/v1/api.proto`), written as `prost` derives
//! with the same field numbers; fields not listed are skipped by the decoder. No
//! `protoc` is needed to build. To add a field, copy its number from `api.proto`.
//!
//! ```no_run
//! # async fn f() -> Result<(), sonde::pods::cri::CriError> {
//! use sonde::pods::cri::Client;
//! let mut c = Client::connect("/run/containerd/containerd.sock".as_ref()).await?;
//! for s in c.list_pod_sandboxes().await? {
//!     let m = s.metadata.unwrap_or_default();
//!     println!("{}/{} {}", m.namespace, m.name, s.id);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;

/// The largest answer read from the runtime (a node of 250 pods answers ~1 MB).
const MAX_ANSWER: usize = 64 << 20;

/// The usual CRI sockets, in the order `cri_socket: auto` tries them.
pub const SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/snap/microk8s/common/run/containerd.sock",
    "/run/cri-dockerd.sock",
];

/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The first of [`SOCKETS`] that is a unix socket.
pub fn find_socket() -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("{method}: {reason}")]
    Transport { method: String, reason: String },
    #[error("{method}: grpc status {code}: {message}")]
    Status {
        method: String,
        code: u32,
        message: String,
    },
    #[error("{method}: bad response: {reason}")]
    Decode { method: String, reason: String },
    #[error("{method}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { method: String },
}

/// A connection to a CRI runtime.
pub struct Client {
    sender: http2::SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to the runtime's socket (HTTP/2 without TLS).
    pub async fn connect(socket: &Path) -> Result<Client, CriError> {
        let err = |source| CriError::Connect {
            socket: socket.display().to_string(),
            source,
        };
        let stream = tokio::time::timeout(CALL_TIMEOUT, tokio::net::UnixStream::connect(socket))
            .await
            .map_err(|_| err(std::io::ErrorKind::TimedOut.into()))?
            .map_err(err)?;
        let (sender, conn) = http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(|e| err(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { sender })
    }

    /// One unary call of `runtime.v1.RuntimeService/<method>`.
    pub async fn call<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<R, CriError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method, request))
            .await
            .map_err(|_| CriError::Timeout {
                method: method.to_string(),
            })?
    }

    async fn call_inner<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<R, CriError> {
        let transport = |reason: String| CriError::Transport {
            method: method.to_string(),
            reason,
        };
        let mut body = BytesMut::with_capacity(5 + request.encoded_len());
        body.put_u8(0);
        body.put_u32(request.encoded_len() as u32);
        request
            .encode(&mut body)
            .map_err(|e| transport(e.to_string()))?;
        let req = hyper::Request::post(format!(
            "http://localhost/runtime.v1.RuntimeService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body.freeze()))
        .map_err(|e| transport(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        // A gRPC error without a body comes in the headers ("trailers-only").
        let mut status = grpc_status(&parts.headers);
        // A runtime that answers without end must not take the agent's memory.
        let collected = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?;
        if let Some(t) = collected.trailers() {
            if let Some(s) = grpc_status(t) {
                status = Some(s);
            }
        }
        match status {
            Some((0, _)) => {}
            Some((code, message)) => {
                return Err(CriError::Status {
                    method: method.to_string(),
                    code,
                    message,
                })
            }
            None if !parts.status.is_success() => {
                return Err(transport(format!("http status {}", parts.status)))
            }
            None => return Err(transport("no grpc-status in the answer".into())),
        }
        let mut data = collected.to_bytes();
        let decode = |reason: String| CriError::Decode {
            method: method.to_string(),
            reason,
        };
        if data.len() < 5 {
            return Err(decode(format!("{} bytes, no message", data.len())));
        }
        if data.get_u8() != 0 {
            return Err(decode("compressed message (not asked for)".into()));
        }
        let len = data.get_u32() as usize;
        if data.len() < len {
            return Err(decode(format!(
                "message of {len} bytes cut at {}",
                data.len()
            )));
        }
        R::decode(data.slice(..len)).map_err(|e| decode(e.to_string()))
    }

    /// Every pod sandbox, ready or not.
    pub async fn list_pod_sandboxes(&mut self) -> Result<Vec<PodSandbox>, CriError> {
        let r: ListPodSandboxResponse = self
            .call("ListPodSandbox", &ListPodSandboxRequest::default())
            .await?;
        Ok(r.items)
    }

    /// A sandbox's status with the runtime's verbose `info` (JSON by key).
    pub async fn pod_sandbox_status(
        &mut self,
        id: &str,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        self.call(
            "PodSandboxStatus",
            &PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            },
        )
        .await
    }

    /// Every container.
    pub async fn list_containers(&mut self) -> Result<Vec<Container>, CriError> {
        let r: ListContainersResponse = self
            .call("ListContainers", &ListContainersRequest::default())
            .await?;
        Ok(r.containers)
    }
}

fn grpc_status(h: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the verbose `info` of a sandbox says about its process and network.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The sandbox (pause) process, in the runtime's pid namespace.
    pub pid: Option<u32>,
    /// The network namespace file (`/var/run/netns/cni-...`), from the OCI spec.
    pub netns_path: Option<PathBuf>,
}

/// Reads `info["info"]` (containerd, CRI-O both put a JSON object there): `pid`,
/// and the `network` namespace path of `runtimeSpec.linux.namespaces`.
pub fn sandbox_info(info: &HashMap<String, String>) -> SandboxInfo {
    let Some(v) = info
        .get("info")
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    else {
        return SandboxInfo::default();
    };
    let pid = v
        .get("pid")
        .and_then(|p| p.as_u64())
        .filter(|p| *p > 0)
        .map(|p| p as u32);
    let netns_path = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .and_then(|a| {
            a.iter()
                .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
        })
        .and_then(|n| n.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    SandboxInfo { pid, netns_path }
}

// ---- CRI v1 messages (field numbers from api.proto) ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `PodSandboxState`: `SANDBOX_READY = 0`, `SANDBOX_NOTREADY = 1`.
pub const SANDBOX_READY: i32 = 0;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {
    // filter = 1 (PodSandboxFilter) is not used: every sandbox is listed.
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodIp {
    #[prost(string, tag = "1")]
    pub ip: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
    #[prost(map = "string, string", tag = "7")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "8")]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {
    // filter = 1 (ContainerFilter) is not used: every container is listed.
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `ContainerState`: created 0, running 1, exited 2, unknown 3.
pub const CONTAINER_RUNNING: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(int32, tag = "6")]
    pub state: i32,
    #[prost(map = "string, string", tag = "8")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn info_gives_pid_and_netns_path() {
        let mut info = HashMap::new();
        info.insert(
            "info".to_string(),
            r#"{"pid": 4242, "runtimeSpec": {"linux": {"namespaces": [
                {"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]}}}"#
                .to_string(),
        );
        let i = sandbox_info(&info);
        assert_eq!(i.pid, Some(4242));
        assert_eq!(
            i.netns_path.as_deref(),
            Some(Path::new("/var/run/netns/cni-1"))
        );
        assert_eq!(sandbox_info(&HashMap::new()), SandboxInfo::default());
    }

    #[test]
    fn messages_round_trip_with_their_field_numbers() {
        let s = PodSandbox {
            id: "abc".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web-1".into(),
                uid: "u".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            state: 1,
            ..Default::default()
        };
        let bytes = s.encode_to_vec();
        // id: field 1, wire type 2 (length-delimited) = 0x0a.
        assert_eq!(&bytes[..5], &[0x0a, 3, b'a', b'b', b'c']);
        assert_eq!(PodSandbox::decode(&bytes[..]).unwrap(), s);
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode("not%20found%3A x"), "not found: x");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
