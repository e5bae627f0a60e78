//! Traffic control hooks: programs attached to a set of interfaces that changes at run
//! time.
//!
//! A [`Hook::Tc`](super::catalog::Hook::Tc) is not one place in the kernel but every
//! interface whose name matches the script's `interfaces` param (a comma-separated
//! glob list, `!` excludes: `"eth*,veth*,lo,!veth-skip*"`). [`TcAttacher::start`]
//! attaches the programs to the interfaces there now, then a thread keeps the set up
//! to date: it listens to rtnetlink link notifications (`RTMGRP_LINK`), so a new
//! interface (the veth of a new pod) is attached within milliseconds of appearing,
//! and rescans every few seconds in case a notification was lost (a full socket
//! buffer). Interfaces that disappear or are renamed out of the pattern are detached.
//! Only the interfaces of sonde's own network namespace are attached (a pod's traffic
//! is seen on the host end of its veth).
//!
//! How programs attach, by the script's `tc_mode` param:
//! - `tcx` (the default on 6.6+): a TCX link per interface and direction. The link
//!   belongs to the process: it goes away when sonde closes it or dies, even killed,
//!   and `tc filter show` never lists it (`bpftool link` does).
//! - `netlink` (the default before 6.6): a `cls_bpf` filter in direct-action mode
//!   under a `clsact` qdisc, at sonde's fixed priority and with a handle that names
//!   the sonde process and whether sonde created the qdisc ([`filters`]). A missing
//!   `clsact` is created, and removed again on exit once no filter is left on it; one
//!   that existed before is never removed.
//!
//! Nothing stays in the kernel after sonde, `kill -9` included: a filter outlives its
//! process, so [`TcAttacher::start`] first removes every filter (and clsact qdisc)
//! that a sonde no longer running left on any interface of the namespace, whatever
//! the mode, and each interface is swept again right before it is attached: sonde
//! never attaches beside its own leftovers. Filters of a sonde still running (the
//! daemon while `sonde run` starts) and of other tools are left alone.
//!
//! Dropping the [`TcAttacher`] (it lives in [`super::Loaded`]) stops the thread and
//! detaches everything.

pub mod filters;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::Ebpf;
use netlink_sys::Socket as WatchSocket;

use filters::{Handle, Owner};

use super::catalog::TcDirection;
use super::error::chain;
use crate::netlink::{names, route, Socket};
use crate::script::ParamValue;

/// The param that lists the interfaces.
pub const INTERFACES_PARAM: &str = "interfaces";
/// The param that chooses how programs attach: `auto`, `tcx` or `netlink`.
pub const MODE_PARAM: &str = "tc_mode";
/// Params read by the loader for TC hooks (not knobs: they change what is attached).
pub const PARAMS: &[&str] = &[INTERFACES_PARAM, MODE_PARAM];

/// Interfaces of a Kubernetes node when the script does not say: uplinks (`eth*`,
/// `en*`, `bond*`) and pod veths of the common CNIs (bridge/flannel/kindnet `veth*`,
/// Calico `cali*`, Cilium `lxc*`, AWS VPC CNI `eni*`). Bridges (`cni0`, `docker0`)
/// are left out: their traffic is already seen on the veths.
pub const DEFAULT_INTERFACES: &str = "eth*,en*,bond*,veth*,cali*,lxc*,eni*";

/// Full rescan period, in case a link notification was lost.
const RESCAN: Duration = Duration::from_secs(5);

/// Why programs could not be attached to interfaces.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("param `{INTERFACES_PARAM}`: {0}")]
    Interfaces(#[from] PatternError),
    #[error("param `{MODE_PARAM}`: {0}")]
    Mode(#[from] ModeError),
    #[error("no interface could be attached: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoInterface(Vec<InterfaceError>),
    #[error("cannot start the interface watcher: {0}")]
    Watcher(std::io::Error),
}

/// Why an `interfaces` param is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("`{0}`: `!` must be followed by a glob")]
    BareExclude(String),
    #[error(
        "`{0}` names no interface; expected a comma-separated glob list such as `eth*,veth*,lo`"
    )]
    NoInclude(String),
}

/// A `tc_mode` param that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`; expected auto, tcx (6.6+) or netlink")]
pub struct ModeError(String);

/// Why one interface could not be attached.
#[derive(Debug, thiserror::Error)]
#[error("{interface}: {failure}")]
pub struct InterfaceError {
    pub interface: String,
    pub failure: InterfaceFailure,
}

/// The step of attaching to one interface that failed.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceFailure {
    #[error("{}", chain(.0))]
    Filters(filters::FilterError),
    #[error("add clsact qdisc: {0}")]
    Qdisc(std::io::Error),
    #[error("object has no program `{0}`")]
    NoProgram(String),
    #[error("{program}: not a classifier: {}", chain(error))]
    NotClassifier {
        program: String,
        error: ProgramError,
    },
    #[error("{program} ({direction:?}): every sonde filter handle of this process is taken")]
    NoHandle {
        program: String,
        direction: TcDirection,
    },
    #[error("{program} ({direction:?}): {}", chain(error))]
    Attach {
        program: String,
        direction: TcDirection,
        error: ProgramError,
    },
}

/// A comma-separated list of globs (`*`, `?`); entries starting with `!` exclude.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let mut p = Pattern {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.strip_prefix('!') {
                Some(x) if !x.is_empty() => p.exclude.push(x.to_string()),
                Some(_) => return Err(PatternError::BareExclude(text.to_string())),
                None => p.include.push(item.to_string()),
            }
        }
        if p.include.is_empty() {
            return Err(PatternError::NoInclude(text.to_string()));
        }
        Ok(p)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.include
            .iter()
            .any(|g| glob(g.as_bytes(), name.as_bytes()))
            && !self
                .exclude
                .iter()
                .any(|g| glob(g.as_bytes(), name.as_bytes()))
    }
}

/// `*` matches any run of characters, `?` one character, anything else itself.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// How programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcx,
    Netlink,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode, ModeError> {
        match text {
            "" | "auto" => Ok(if super::kernel_at_least(6, 6) {
                Mode::Tcx
            } else {
                Mode::Netlink
            }),
            "tcx" => Ok(Mode::Tcx),
            "netlink" => Ok(Mode::Netlink),
            other => Err(ModeError(other.to_string())),
        }
    }
}

fn string_param<'a>(params: &'a [(String, ParamValue)], name: &str) -> Option<&'a str> {
    params.iter().find_map(|(n, v)| match v {
        ParamValue::Str(s) if n == name => Some(s.as_str()),
        _ => None,
    })
}

/// One attached interface.
struct Attached {
    name: String,
    /// Held for their `Drop`, which detaches them.
    _links: Vec<SchedClassifierLink>,
}

/// What the watcher thread owns; handed back on stop for the clean-up.
struct State {
    ebpf: Arc<Mutex<Ebpf>>,
    programs: Vec<(String, TcDirection)>,
    pattern: Pattern,
    mode: Mode,
    attached: HashMap<u32, Attached>,
    /// Interfaces whose clsact qdisc sonde created (netlink mode): this process, or
    /// another sonde whose filters say so.
    created: HashSet<u32>,
    /// Name and tag of each program: recognise filters of older sonde builds.
    legacy: Vec<(String, [u8; 8])>,
    /// Interfaces that failed to attach, not retried until they change name or index.
    failed: HashMap<u32, InterfaceError>,
    names: Arc<Mutex<Vec<String>>>,
    /// The rtnetlink socket of link dumps and qdisc changes, opened on first use.
    route: Option<Socket>,
}

/// Programs attached to a changing set of interfaces; see the module docs.
pub struct TcAttacher {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<State>>,
    names: Arc<Mutex<Vec<String>>>,
    pub mode: Mode,
}

impl TcAttacher {
    /// Attaches `programs` (already loaded) to the interfaces matching the params and
    /// starts watching for new ones. Fails when the params are wrong, or when
    /// interfaces match and none of them could be attached.
    pub fn start(
        ebpf: Arc<Mutex<Ebpf>>,
        programs: Vec<(String, TcDirection)>,
        params: &[(String, ParamValue)],
    ) -> Result<TcAttacher, TcError> {
        let text = string_param(params, INTERFACES_PARAM).unwrap_or(DEFAULT_INTERFACES);
        let pattern = Pattern::parse(text)?;
        let mode = Mode::parse(string_param(params, MODE_PARAM).unwrap_or("auto"))?;
        let names = Arc::new(Mutex::new(Vec::new()));
        let legacy = program_tags(&ebpf, &programs);
        // What a killed sonde left, on every interface: it would run beside us.
        if let Err(e) = filters::sweep(&legacy, None) {
            tracing::warn!(error = %chain(&e), "cannot remove the TC filters a killed sonde left");
        }
        let mut state = State {
            ebpf,
            programs,
            pattern,
            mode,
            attached: HashMap::new(),
            created: HashSet::new(),
            legacy,
            failed: HashMap::new(),
            names: names.clone(),
            route: None,
        };
        // Subscribe before the first scan so that no interface falls in between.
        let watch = link_watch()
            .inspect_err(|e| tracing::warn!(error = %e, "no rtnetlink link notifications; rescanning interfaces every second instead"))
            .ok();
        state.scan();
        if state.attached.is_empty() && !state.failed.is_empty() {
            let errors: Vec<InterfaceError> = state.failed.drain().map(|(_, e)| e).collect();
            state.shutdown();
            return Err(TcError::NoInterface(errors));
        }
        if state.attached.is_empty() {
            tracing::warn!(
                interfaces = text,
                "no interface matches yet; attaching as they appear"
            );
        }
        let (stop, stopped) = UnixStream::pair().map_err(TcError::Watcher)?;
        let thread = std::thread::Builder::new()
            .name("sonde-tc".into())
            .spawn(move || {
                watch_loop(&mut state, watch, stopped);
                state
            })
            .map_err(TcError::Watcher)?;
        Ok(TcAttacher {
            stop: Some(stop),
            thread: Some(thread),
            names,
            mode,
        })
    }

    /// Names of the interfaces attached now.
    pub fn interfaces(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TcAttacher {
    fn drop(&mut self) {
        if let Some(mut s) = self.stop.take() {
            let _ = s.write_all(b"x");
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(mut state) => state.shutdown(),
                Err(_) => tracing::error!(
                    "interface watcher panicked; its filters are detached with the program"
                ),
            }
        }
    }
}

fn watch_loop(state: &mut State, watch: Option<WatchSocket>, mut stopped: UnixStream) {
    let mut last_scan = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stopped.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: watch.as_ref().map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::error!(error = %std::io::Error::last_os_error(), "interface watcher: poll failed; stopping it");
            return;
        }
        if fds[0].revents != 0 {
            let _ = stopped.read(&mut [0u8; 1]);
            return;
        }
        let notified = fds[1].revents != 0;
        if let (true, Some(w)) = (notified, watch.as_ref()) {
            // Any link message (or ENOBUFS: some were lost) means: look again.
            while w.recv(&mut &mut buf[..], 0).is_ok_and(|n| n > 0) {}
        }
        if notified || watch.is_none() || last_scan.elapsed() >= RESCAN {
            state.scan();
            last_scan = Instant::now();
        }
    }
}

impl State {
    /// The route socket, opened on first use.
    fn route(&mut self) -> std::io::Result<&mut Socket> {
        if self.route.is_none() {
            self.route = Some(Socket::open(libc::NETLINK_ROUTE)?);
        }
        Ok(self.route.as_mut().expect("opened above"))
    }

    /// `(ifindex, name)` of every interface of this namespace; they also refresh
    /// the namespace's interface names ([`names`]). None when they cannot be listed.
    fn interfaces(&mut self) -> Option<Vec<(u32, String)>> {
        match self.route().and_then(route::links) {
            Ok(links) => {
                names::store_own(&links);
                Some(links)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the interfaces; the attached set is kept until the next scan");
                self.route = None;
                None
            }
        }
    }

    /// Attaches new matching interfaces, detaches gone or renamed ones.
    fn scan(&mut self) {
        let Some(now) = self.interfaces() else {
            return;
        };
        let present: HashMap<u32, &str> = now.iter().map(|(i, n)| (*i, n.as_str())).collect();
        let gone: Vec<u32> = self
            .attached
            .iter()
            .filter(|(i, a)| {
                present
                    .get(i)
                    .is_none_or(|n| *n != a.name || !self.pattern.matches(n))
            })
            .map(|(i, _)| *i)
            .collect();
        for ifindex in gone {
            if let Some(a) = self.attached.remove(&ifindex) {
                let still_there = present.contains_key(&ifindex);
                tracing::info!(interface = %a.name, ifindex, "interface detached ({})", if still_there { "renamed" } else { "gone" });
                drop(a);
                if still_there {
                    self.remove_created_qdisc(ifindex);
                } else {
                    self.created.remove(&ifindex);
                }
            }
        }
        self.failed.retain(|i, _| present.contains_key(i));
        for (ifindex, name) in &now {
            if self.attached.contains_key(ifindex)
                || self.failed.contains_key(ifindex)
                || !self.pattern.matches(name)
            {
                continue;
            }
            match self.attach(*ifindex, name) {
                Ok(links) => {
                    tracing::info!(interface = %name, ifindex, mode = ?self.mode, "interface attached");
                    self.attached.insert(
                        *ifindex,
                        Attached {
                            name: name.clone(),
                            _links: links,
                        },
                    );
                }
                Err(failure) => {
                    tracing::warn!(interface = %name, ifindex, error = %failure, "cannot attach to interface");
                    let interface = name.clone();
                    self.failed
                        .insert(*ifindex, InterfaceError { interface, failure });
                }
            }
        }
        let mut names: Vec<String> = self.attached.values().map(|a| a.name.clone()).collect();
        names.sort();
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    fn attach(
        &mut self,
        ifindex: u32,
        name: &str,
    ) -> Result<Vec<SchedClassifierLink>, InterfaceFailure> {
        // A leftover that appeared since start (another sonde killed meanwhile).
        if let Err(e) = filters::sweep(&self.legacy, Some(ifindex)) {
            tracing::warn!(interface = name, error = %chain(&e), "cannot remove the TC filters a killed sonde left");
        }
        let mut handles = None;
        if self.mode == Mode::Netlink {
            let slot = filters::owner_slot().map_err(InterfaceFailure::Filters)?;
            let added = self.route().and_then(|s| route::add_clsact(s, ifindex));
            let created = match added {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(e) => {
                    self.route = None;
                    return Err(InterfaceFailure::Qdisc(e));
                }
            };
            let existing = filters::clsact_filters(ifindex).map_err(InterfaceFailure::Filters)?;
            // The qdisc was created by sonde: by us now, or by the sonde whose
            // filters are on it (see `filters`).
            let created = created
                || existing
                    .iter()
                    .any(|f| matches!(filters::classify(f, &[]), Owner::Sonde(h) if h.created));
            if created {
                self.created.insert(ifindex);
            }
            handles = Some(HandlePicker {
                created,
                slot,
                used: existing
                    .iter()
                    .filter_map(|f| match filters::classify(f, &[]) {
                        Owner::Sonde(h) if h.slot == slot => Some((f.parent, h.seq)),
                        _ => None,
                    })
                    .collect(),
            });
        }
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut links = Vec::with_capacity(self.programs.len());
        for (program, direction) in &self.programs {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or_else(|| InterfaceFailure::NoProgram(program.clone()))?
                .try_into()
                .map_err(|error| InterfaceFailure::NotClassifier {
                    program: program.clone(),
                    error,
                })?;
            let (kind, parent) = match direction {
                TcDirection::Ingress => (TcAttachType::Ingress, filters::INGRESS),
                TcDirection::Egress => (TcAttachType::Egress, filters::EGRESS),
            };
            let fail = |error: ProgramError| InterfaceFailure::Attach {
                program: program.clone(),
                direction: *direction,
                error,
            };
            let id = match handles.as_mut() {
                None => prog
                    .attach_with_options(
                        name,
                        kind,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(fail)?,
                Some(picker) => loop {
                    let handle = picker
                        .next(parent)
                        .ok_or_else(|| InterfaceFailure::NoHandle {
                            program: program.clone(),
                            direction: *direction,
                        })?;
                    let options = TcAttachOptions::Netlink(NlOptions {
                        priority: filters::PRIORITY,
                        handle: TcHandle::from(handle.encode()),
                        ..NlOptions::default()
                    });
                    match prog.attach_with_options(name, kind, options) {
                        Ok(id) => break id,
                        // Taken meanwhile by another script of this process.
                        Err(ProgramError::TcError(tc::TcError::NetlinkError(e)))
                            if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(fail(e)),
                    }
                },
            };
            links.push(prog.take_link(id).map_err(fail)?);
        }
        Ok(links)
    }

    /// Deletes the clsact qdisc sonde created on `ifindex`, unless a filter of
    /// someone else is on it now.
    fn remove_created_qdisc(&mut self, ifindex: u32) {
        if !self.created.remove(&ifindex) {
            return;
        }
        match filters::clsact_filters(ifindex).map(|f| f.len()) {
            Ok(0) => {
                if let Err(e) = filters::delete_clsact(ifindex) {
                    tracing::warn!(ifindex, error = %chain(&e), "cannot remove the clsact qdisc sonde added");
                }
            }
            Ok(n) => tracing::info!(
                ifindex,
                filters = n,
                "clsact qdisc added by sonde kept: other filters use it"
            ),
            Err(e) => {
                tracing::warn!(ifindex, error = %chain(&e), "clsact qdisc added by sonde kept: cannot list its filters")
            }
        }
    }

    /// Detaches everything, then removes the qdiscs sonde added.
    fn shutdown(&mut self) {
        let attached: Vec<u32> = self.attached.keys().copied().collect();
        self.attached.clear();
        for ifindex in attached {
            self.remove_created_qdisc(ifindex);
        }
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Chooses the handles of this process's filters on one interface (netlink mode).
struct HandlePicker {
    created: bool,
    slot: u16,
    /// `(parent, seq)` of this process's filters there.
    used: HashSet<(u32, u8)>,
}

impl HandlePicker {
    /// The lowest free handle on `parent`, marked used.
    fn next(&mut self, parent: u32) -> Option<Handle> {
        let seq = (0..=u8::MAX).find(|s| !self.used.contains(&(parent, *s)))?;
        self.used.insert((parent, seq));
        Some(Handle {
            created: self.created,
            slot: self.slot,
            seq,
        })
    }
}

/// Name and tag of each of `programs` as loaded (a program whose tag cannot be read
/// is left out).
fn program_tags(
    ebpf: &Arc<Mutex<Ebpf>>,
    programs: &[(String, TcDirection)],
) -> Vec<(String, [u8; 8])> {
    let ebpf = ebpf.lock().unwrap_or_else(|e| e.into_inner());
    programs
        .iter()
        .filter_map(|(name, _)| {
            let prog: &SchedClassifier = ebpf.program(name)?.try_into().ok()?;
            let tag = prog.info().ok()?.tag().to_be_bytes();
            Some((name.clone(), tag))
        })
        .collect()
}

/// Names of the programs attached by TCX links to `interface`, ingress then egress
/// (empty before 6.6, or when the interface does not exist): what `tc filter show`
/// cannot list.
pub fn tcx_programs(interface: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
        if let Ok((_, infos)) = SchedClassifier::query_tcx(interface, kind) {
            out.extend(
                infos
                    .iter()
                    .filter_map(|i| i.name_as_str().map(str::to_string)),
            );
        }
    }
    out
}

/// A non-blocking rtnetlink socket subscribed to link changes.
fn link_watch() -> std::io::Result<WatchSocket> {
    Socket::subscribe(libc::NETLINK_ROUTE, libc::RTMGRP_LINK as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"veth*", b"veth1234"));
        assert!(glob(b"veth*", b"veth"));
        assert!(!glob(b"veth*", b"eth0"));
        assert!(glob(b"e?h0", b"eth0"));
        assert!(glob(b"*0", b"eth0"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"lo", b"lo"));
        assert!(!glob(b"lo", b"lo0"));
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse(" eth*, veth* ,lo,!veth-skip*").unwrap();
        assert!(p.matches("eth0"));
        assert!(p.matches("lo"));
        assert!(p.matches("veth12"));
        assert!(!p.matches("veth-skip1"));
        assert!(!p.matches("cni0"));
        assert!(Pattern::parse("!eth0").is_err());
        assert!(Pattern::parse(" , ").is_err());
        assert!(Pattern::parse("eth0,!").is_err());
        let d = Pattern::parse(DEFAULT_INTERFACES).unwrap();
        for name in [
            "eth0", "ens5", "enp0s3", "bond0", "veth1a2b", "cali123", "lxc9f", "eni77",
        ] {
            assert!(d.matches(name), "{name}");
        }
        for name in ["lo", "cni0", "docker0", "flannel.1", "tunl0"] {
            assert!(!d.matches(name), "{name}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("tcx"), Ok(Mode::Tcx));
        assert_eq!(Mode::parse("netlink"), Ok(Mode::Netlink));
        assert!(Mode::parse("auto").is_ok());
        assert!(Mode::parse("xdp").is_err());
    }
}
