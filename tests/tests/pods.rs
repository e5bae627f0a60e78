//! Pod resolution against a real containerd (Debian's `containerd`, `runc`,
//! `containernetworking-plugins`): each test starts its own containerd (config, root,
//! state and socket in a temp directory, its own CNI bridge and subnet), imports a
//! pause image it builds (a static C binary packed as an OCI archive: images cannot
//! be pulled here), creates pod sandboxes over CRI, makes TCP resets (and so drops:
//! the SYNs to a closed port) inside their network namespaces, and checks what the real `sonde daemon` exports and emits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sonde_tests::cri::{connects_in, ipv4_of, netns_of, resets_in, Containerd};
use sonde_tests::daemon::{sample_sum, Daemon};
use sonde_tests::require_root;

/// A user's script: each reset with the pods at both ends of its tuple.
const PEERS_SCRIPT: &str = r#"
const PROBE = #{ program: "tcp_reset", params: #{ emit_events: true }, interval: "5s" };

fn on_event(ev) {
    let s = pods::by_ip(ev.saddr);
    let d = pods::by_ip(ev.daddr);
    emit("PEER", #{ kind: ev.kind, src: `${s.namespace}/${s.name}`, dst: `${d.namespace}/${d.name}` });
}
"#;

/// The real daemon (the test kit's harness) with the reset and drop built-ins
/// emitting events, the peers script, and `pods`, the config's `pods:` section.
fn daemon(test: &str, pods: &str) -> Daemon {
    let write_peers = |p: &std::path::Path| std::fs::write(p, PEERS_SCRIPT).unwrap();
    Daemon::start_with(
        test,
        &["tcp_reset", "packet_loss"],
        &format!(
            "  params:\n    tcp_reset: {{ emit_events: true }}\n    packet_loss: {{ emit_events: true }}\n{pods}"
        ),
        &[("peers.rhai", &write_peers)],
        None,
    )
}

/// The value of the reset counter series carrying all of `labels`.
fn resets(d: &Daemon, labels: &[(&str, &str)]) -> Option<f64> {
    sample_sum(&d.metrics(), "sonde_tcp_reset_segments_total", labels)
}

fn refused_event(stdout: &str, pod: &str, namespace: &str) -> bool {
    let want = format!("pod={pod} namespace={namespace} ");
    stdout
        .lines()
        .any(|l| l.contains("type=TCPRESET_") && l.contains(&want))
}

#[test]
fn pods_from_containerd_label_events_and_metrics_new_and_deleted_pods() {
    if !require_root("pods_from_containerd_label_events_and_metrics_new_and_deleted_pods") {
        return;
    }
    let mut ctd = Containerd::start("labels", 41);
    let (web, web_pid) = ctd.run_pod("shop", "web-1", "web");
    let d = daemon(
        "pods-labels",
        &format!(
            "pods:\n  cri_socket: {}\n  refresh: 2s\n  labels: [app]\n",
            ctd.socket().display()
        ),
    );

    // A pod that existed before the daemon: events and metrics carry its name,
    // namespace, node, and its `app` label.
    resets_in(&netns_of(web_pid), 3);
    d.wait_for("a reset event of web-1", Duration::from_secs(20), || {
        refused_event(&d.stdout(), "web-1", "shop")
    });
    d.wait_for("web-1's reset counter", Duration::from_secs(15), || {
        resets(
            &d,
            &[
                ("namespace", "shop"),
                ("pod", "web-1"),
                ("node", "e2e-node"),
                ("app", "web"),
            ],
        )
        .is_some_and(|v| v >= 3.0)
    });
    // The SYNs to the closed port are drops too (NO_SOCKET), counted per pod.
    d.wait_for("web-1's drops", Duration::from_secs(15), || {
        sample_sum(
            &d.metrics(),
            "sonde_packet_loss_packets_total",
            &[
                ("namespace", "shop"),
                ("pod", "web-1"),
                ("reason", "NO_SOCKET"),
                ("app", "web"),
            ],
        )
        .is_some_and(|v| v >= 3.0)
    });
    assert!(
        d.stdout().lines().any(|l| l.contains("type=PACKETLOSS")
            && l.contains("pod=web-1 namespace=shop ")
            && l.contains("NO_SOCKET")),
        "{}",
        d.stdout()
    );
    let m = d.metrics();
    assert_eq!(
        sample_sum(&m, "sonde_pods_namespaces", &[("source", "cri")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample_sum(&m, "sonde_pods_cri_up", &[]), Some(1.0));

    // A pod created after the daemon started: labelled within one refresh (2 s)
    // of its first reset (plus the script's 5 s tick for the counter).
    let created = Instant::now();
    let (_api, api_pid) = ctd.run_pod("shop", "api-1", "api");
    resets_in(&netns_of(api_pid), 2);
    let took = d.wait_for(
        "api-1's reset counter",
        Duration::from_secs(2 + 5 + 3),
        || {
            resets(
                &d,
                &[("namespace", "shop"), ("pod", "api-1"), ("app", "api")],
            )
            .is_some_and(|v| v >= 2.0)
        },
    );
    eprintln!(
        "api-1 labelled in the metrics {:?} after its sandbox was created",
        created.elapsed().min(took + Duration::from_secs(1))
    );
    resets_in(&netns_of(api_pid), 1);
    d.wait_for("a reset event of api-1", Duration::from_secs(10), || {
        refused_event(&d.stdout(), "api-1", "shop")
    });

    // pods::by_ip names the pod at each end of a tuple: web-1 connects to api-1's
    // address on a closed port, api-1 answers with a reset, web-1 receives it.
    let api_ip = ipv4_of(api_pid);
    connects_in(&netns_of(web_pid), SocketAddr::from((api_ip, 9)), 1);
    // (NOSOCK: the sender's tuple; RECEIVE: the receiving socket's.)
    let peer = |pod: &str, kind: &str, src: &str, dst: &str| {
        d.stdout().lines().any(|l| {
            l.contains("type=PEER ")
                && l.contains(&format!("pod={pod} namespace=shop "))
                && l.contains(&format!("kind={kind} "))
                && l.contains(&format!("src=shop/{src}"))
                && l.contains(&format!("dst=shop/{dst}"))
        })
    };
    d.wait_for(
        "pods::by_ip in both pods' resets",
        Duration::from_secs(10),
        || peer("api-1", "NOSOCK", "api-1", "web-1") && peer("web-1", "RECEIVE", "web-1", "api-1"),
    );

    // A deleted pod's series go away (at the refresh that no longer sees it) and
    // stay away; the other pod's stay.
    ctd.remove_pod(&web);
    let gone = d.wait_for("web-1's series to go", Duration::from_secs(10), || {
        !d.metrics().contains("pod=\"web-1\"")
    });
    eprintln!("web-1's series removed {gone:?} after RemovePodSandbox");
    std::thread::sleep(Duration::from_secs(6));
    let m = d.metrics();
    assert!(!m.contains("pod=\"web-1\""), "web-1 came back:\n{m}");
    assert!(
        sample_sum(&m, "sonde_tcp_reset_segments_total", &[("pod", "api-1")]).is_some(),
        "{m}"
    );
}

#[test]
fn without_containerd_sonde_keeps_running_with_fallback_names_and_recovers() {
    if !require_root("without_containerd_sonde_keeps_running_with_fallback_names_and_recovers") {
        return;
    }
    let mut ctd = Containerd::start("outage", 42);
    let (_db, db_pid) = ctd.run_pod("data", "db-1", "db");
    let d = daemon(
        "pods-outage",
        &format!(
            "pods:\n  cri_socket: {}\n  refresh: 1s\n",
            ctd.socket().display()
        ),
    );
    resets_in(&netns_of(db_pid), 1);
    d.wait_for("db-1 labelled", Duration::from_secs(15), || {
        resets(&d, &[("namespace", "data"), ("pod", "db-1")]).is_some()
    });

    // containerd stops (its pods keep running).
    ctd.stop();
    d.wait_for("sonde_pods_cri_up 0", Duration::from_secs(10), || {
        sample_sum(&d.metrics(), "sonde_pods_cri_up", &[]) == Some(0.0)
    });
    // The pods it named keep their names.
    let before = resets(&d, &[("pod", "db-1")]).unwrap();
    resets_in(&netns_of(db_pid), 2);
    d.wait_for("db-1 still labelled", Duration::from_secs(10), || {
        resets(&d, &[("namespace", "data"), ("pod", "db-1")]).is_some_and(|v| v >= before + 2.0)
    });
    // A new namespace gets its fallback name: `ip netns` gives it one.
    let name = format!("sonde-pods-{}", std::process::id());
    let _ns = sonde_tests::NamedNetns::add(&name);
    resets_in(&PathBuf::from(format!("/run/netns/{name}")), 2);
    d.wait_for(
        "the named namespace labelled by its name",
        Duration::from_secs(15),
        || resets(&d, &[("namespace", ""), ("pod", &name)]).is_some_and(|v| v >= 2.0),
    );
    assert!(
        d.stderr().contains("container runtime unreachable"),
        "{}",
        d.stderr()
    );

    // containerd comes back: a pod created then is labelled by it.
    ctd.run();
    d.wait_for("sonde_pods_cri_up 1", Duration::from_secs(10), || {
        sample_sum(&d.metrics(), "sonde_pods_cri_up", &[]) == Some(1.0)
    });
    let (_db2, db2_pid) = ctd.run_pod("data", "db-2", "db");
    resets_in(&netns_of(db2_pid), 1);
    d.wait_for(
        "db-2 labelled after the outage",
        Duration::from_secs(15),
        || resets(&d, &[("namespace", "data"), ("pod", "db-2")]).is_some(),
    );
    assert!(
        d.stderr().contains("container runtime reachable again"),
        "{}",
        d.stderr()
    );
}
