//! A real containerd with its CRI, for the tests that need pods: each test starts its
//! own (config, root, state and socket in a temp directory, its own CNI bridge and
//! subnet), imports a pause image it builds (a static C binary packed as an OCI
//! archive: images cannot be pulled here), and creates pod sandboxes and containers
//! over CRI, as the kubelet would. Needs Debian's `containerd`, `runc`,
//! `containernetworking-plugins`.
//!
//! ```no_run
//! use sonde_tests::cri::{netns_of, resets_in, Containerd};
//! let mut ctd = Containerd::start("example", 40);
//! let (_id, pid) = ctd.run_pod("shop", "web-1", "web");
//! resets_in(&netns_of(pid), 3); // three refused connects inside the pod
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sonde::pods::cri::{self, Client};

use crate::connect_refused;

/// The pause image every sandbox runs.
pub const IMAGE: &str = "sonde.test/pause:1";

// ---- CRI messages to create and remove sandboxes (field numbers from api.proto) ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<cri::PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
    #[prost(message, optional, tag = "3")]
    pub run_as_user: Option<Int64Value>,
    #[prost(bool, tag = "6")]
    pub privileged: bool,
}

/// `NamespaceMode`: POD 0, CONTAINER 1, NODE 2.
pub const NAMESPACE_NODE: i32 = 2;

/// The node's network, PID and IPC namespaces.
pub fn host_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NAMESPACE_NODE,
        pid: NAMESPACE_NODE,
        ipc: NAMESPACE_NODE,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `MountPropagation`: PRIVATE 0, HOST_TO_CONTAINER 1, BIDIRECTIONAL 2.
pub const PROPAGATION_HOST_TO_CONTAINER: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub container_path: String,
    #[prost(string, tag = "2")]
    pub host_path: String,
    #[prost(bool, tag = "3")]
    pub readonly: bool,
    #[prost(int32, tag = "5")]
    pub propagation: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Capability {
    #[prost(string, repeated, tag = "1")]
    pub add_capabilities: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub drop_capabilities: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64Value {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

/// `SecurityProfile.ProfileType`: RuntimeDefault 0, Unconfined 1, Localhost 2.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityProfile {
    #[prost(int32, tag = "1")]
    pub profile_type: i32,
    #[prost(string, tag = "2")]
    pub localhost_ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub capabilities: Option<Capability>,
    #[prost(bool, tag = "2")]
    pub privileged: bool,
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
    #[prost(message, optional, tag = "5")]
    pub run_as_user: Option<Int64Value>,
    #[prost(bool, tag = "7")]
    pub readonly_rootfs: bool,
    /// Deprecated string form ("runtime/default", "unconfined"), still read by
    /// containerd 1.6 when `seccomp` is unset.
    #[prost(string, tag = "10")]
    pub seccomp_profile_path: String,
    #[prost(bool, tag = "11")]
    pub no_new_privs: bool,
    #[prost(message, optional, tag = "15")]
    pub seccomp: Option<SecurityProfile>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<cri::ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(message, repeated, tag = "7")]
    pub mounts: Vec<Mount>,
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerId {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StopContainerRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(int64, tag = "2")]
    timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

/// The part of `ContainerStatus` the tests read. `state`: CREATED 0, RUNNING 1,
/// EXITED 2, UNKNOWN 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    #[prost(string, tag = "10")]
    pub reason: String,
    #[prost(string, tag = "11")]
    pub message: String,
    #[prost(message, repeated, tag = "14")]
    pub mounts: Vec<Mount>,
    #[prost(string, tag = "15")]
    pub log_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<ContainerStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SandboxId {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A containerd of this test, with its own everything.
pub struct Containerd {
    pub dir: PathBuf,
    child: Option<Child>,
    bridge: String,
    sandboxes: Vec<String>,
}

impl Containerd {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// `n` picks the bridge and subnet (10.231.<n>.0/24), one per test.
    pub fn start(test: &str, n: u8) -> Containerd {
        let dir = std::env::temp_dir().join(format!("sonde-pods-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        let bridge = format!("sondecni{n}");
        std::fs::write(
            dir.join("cni/10-sonde.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"sonde{n}","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.231.{n}.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
                dir.join("ipam").display()
            ),
        )
        .unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
            ),
        )
        .unwrap();
        let mut c = Containerd {
            dir,
            child: None,
            bridge,
            sandboxes: Vec::new(),
        };
        c.run();
        let image = build_pause_image(&c.dir);
        c.import(&image);
        c
    }

    /// `ctr images import` of an OCI archive into the CRI's namespace (k8s.io).
    pub fn import(&self, archive: &Path) {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr import {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the daemon process (again) and waits for its CRI to answer.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (apt-get install containerd runc containernetworking-plugins)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let up = block_on(async {
                let mut c = Client::connect(&self.socket()).await.ok()?;
                c.list_pod_sandboxes().await.ok()
            });
            if up.is_some() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not answer CRI within 20s:\n{}",
                std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; the sandboxes keep running (their shims stay).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill on a child we own.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    pub fn call<Q: prost::Message, R: prost::Message + Default>(&self, method: &str, q: &Q) -> R {
        block_on(async {
            let mut c = Client::connect(&self.socket()).await?;
            c.call(method, q).await
        })
        .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Creates a ready sandbox; returns its id and its pause process.
    pub fn run_pod(&mut self, namespace: &str, name: &str, app: &str) -> (String, u32) {
        self.run_pod_as(namespace, name, app, None)
    }

    /// [`run_pod`](Self::run_pod) with the sandbox's process running as `uid` (the
    /// kubelet's pause runs as 65535).
    pub fn run_pod_as(
        &mut self,
        namespace: &str,
        name: &str,
        app: &str,
        uid: Option<i64>,
    ) -> (String, u32) {
        let r: RunPodSandboxResponse = self.call(
            "RunPodSandbox",
            &RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: name.into(),
                        uid: format!("uid-{namespace}-{name}"),
                        namespace: namespace.into(),
                        attempt: 0,
                    }),
                    hostname: name.into(),
                    labels: [("app".to_string(), app.to_string())].into(),
                    linux: uid.map(|value| LinuxPodSandboxConfig {
                        security_context: Some(LinuxSandboxSecurityContext {
                            run_as_user: Some(Int64Value { value }),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
            },
        );
        self.sandboxes.push(r.pod_sandbox_id.clone());
        let st = block_on(async {
            let mut c = Client::connect(&self.socket()).await?;
            c.pod_sandbox_status(&r.pod_sandbox_id).await
        })
        .unwrap();
        let pid = cri::sandbox_info(&st.info)
            .pid
            .expect("sandbox pid in verbose info");
        (r.pod_sandbox_id, pid)
    }

    /// Creates a ready sandbox in the node's network, PID and IPC namespaces (what
    /// `hostNetwork` and `hostPID` ask of the kubelet); its containers' logs go to
    /// `<dir>/logs/<name>/`. Returns its id and config (containers need both).
    pub fn run_host_pod(&mut self, namespace: &str, name: &str) -> (String, PodSandboxConfig) {
        let logs = self.dir.join("logs").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{namespace}-{name}"),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let r: RunPodSandboxResponse = self.call(
            "RunPodSandbox",
            &RunPodSandboxRequest {
                config: Some(config.clone()),
            },
        );
        self.sandboxes.push(r.pod_sandbox_id.clone());
        (r.pod_sandbox_id, config)
    }

    /// CreateContainer then StartContainer; returns the container id.
    pub fn start_container(
        &self,
        sandbox_id: &str,
        sandbox_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let r: CreateContainerResponse = self.call(
            "CreateContainer",
            &CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            },
        );
        let _: Empty = self.call(
            "StartContainer",
            &ContainerId {
                container_id: r.container_id.clone(),
            },
        );
        r.container_id
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let r: ContainerStatusResponse = self.call(
            "ContainerStatus",
            &ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            },
        );
        r.status.unwrap_or_default()
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout` seconds.
    pub fn stop_container(&self, id: &str, timeout: i64) {
        let _: Empty = self.call(
            "StopContainer",
            &StopContainerRequest {
                container_id: id.into(),
                timeout,
            },
        );
    }

    pub fn remove_container(&self, id: &str) {
        let _: Empty = self.call(
            "RemoveContainer",
            &ContainerId {
                container_id: id.into(),
            },
        );
    }

    pub fn remove_pod(&mut self, id: &str) {
        let q = SandboxId {
            pod_sandbox_id: id.into(),
        };
        let _: Empty = self.call("StopPodSandbox", &q);
        let _: Empty = self.call("RemovePodSandbox", &q);
        self.sandboxes.retain(|s| s != id);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_none() && !self.sandboxes.is_empty() {
            self.run();
        }
        for id in self.sandboxes.clone() {
            let q = SandboxId {
                pod_sandbox_id: id.clone(),
            };
            let _ = block_on(async {
                let mut c = Client::connect(&self.socket()).await?;
                c.call::<_, Empty>("StopPodSandbox", &q).await?;
                c.call::<_, Empty>("RemovePodSandbox", &q).await
            });
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // Leftover overlay mounts under root would make the removal fail: unmount first.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.display().to_string();
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&root) {
                    let _ = Command::new("umount").arg("-l").arg(m).status();
                }
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A static `pause` (gcc -static) in an OCI image archive, named [`IMAGE`].
pub fn build_pause_image(dir: &Path) -> PathBuf {
    let b = dir.join("image");
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    std::fs::create_dir_all(b.join("oci/blobs/sha256")).unwrap();
    std::fs::write(
        b.join("pause.c"),
        "#include <signal.h>\n#include <unistd.h>\n\
         static void done(int s) { (void)s; _exit(0); }\n\
         int main(void) { signal(SIGTERM, done); signal(SIGINT, done); for (;;) pause(); }\n",
    )
    .unwrap();
    let sh = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p = |x: &str| b.join(x).display().to_string();
    sh(&[
        "gcc",
        "-static",
        "-O2",
        "-o",
        &p("rootfs/pause"),
        &p("pause.c"),
    ]);
    sh(&[
        "tar",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
        &p("rootfs"),
        "-cf",
        &p("layer.tar"),
        "pause",
    ]);
    // Stores a blob; returns (digest hex, size).
    let blob = |file: &str| {
        let hex = sh(&["sha256sum", &p(file)])
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        std::fs::copy(b.join(file), b.join("oci/blobs/sha256").join(&hex)).unwrap();
        let size = std::fs::metadata(b.join(file)).unwrap().len();
        (hex, size)
    };
    let (layer, layer_size) = blob("layer.tar");
    std::fs::write(
        b.join("config.json"),
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/pause"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
        ),
    )
    .unwrap();
    let (config, config_size) = blob("config.json");
    std::fs::write(
        b.join("manifest.json"),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":{layer_size}}}]}}"#
        ),
    )
    .unwrap();
    let (manifest, manifest_size) = blob("manifest.json");
    std::fs::write(
        b.join("oci/index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        b.join("oci/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    sh(&[
        "tar",
        "-C",
        &p("oci"),
        "-cf",
        &p("image.tar"),
        "oci-layout",
        "index.json",
        "blobs",
    ]);
    b.join("image.tar")
}

/// `n` refused connects to a closed loopback port inside the namespace at `ns_path`
/// (a thread `setns`es there; lo is brought up first).
pub fn resets_in(ns_path: &Path, n: usize) {
    connects_in(ns_path, "127.0.0.1:9".parse().unwrap(), n);
}

/// `n` connects to `to` from inside the namespace at `ns_path`.
pub fn connects_in(ns_path: &Path, to: SocketAddr, n: usize) {
    let up = Command::new("nsenter")
        .arg(format!("--net={}", ns_path.display()))
        .args(["ip", "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success(), "lo up in {}", ns_path.display());
    let f = std::fs::File::open(ns_path).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace fd we hold.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        connect_refused(to, n);
    })
    .join()
    .unwrap();
}

/// The IPv4 address of the sandbox's eth0.
pub fn ipv4_of(pid: u32) -> std::net::Ipv4Addr {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns_of(pid).display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 on eth0: {text}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

pub fn netns_of(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}
