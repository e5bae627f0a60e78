//! sonde: a node agent for Linux network observability.
//!
//! A fixed library of precompiled CO-RE eBPF programs (`kernel-progs/`, embedded in
//! this crate) does the kernel-side work; Rhai scripts decide what the data means.
//! The pieces, in the order data flows through them:
//!
//! - [`btf`]: finds the running kernel's BTF for CO-RE relocation;
//! - [`bpf`]: loads a program's object, picks the variant this kernel can run, attaches
//!   it, reads its ring buffer and maps; [`bpf::decode`] turns record bytes into typed
//!   [`bpf::value::Value`]s by field name using the object's own BTF (in place, from
//!   the ring's bytes, or as records a handler may keep);
//! - [`pods`]: maps network namespaces to pods;
//! - [`netlink`]: rtnetlink, sock_diag and ctnetlink over one socket layer;
//! - [`sources`]: procfs and netlink readers per network namespace (`proc::`,
//!   `netlink::` in scripts);
//! - [`script`]: the sandboxed Rhai host (`init`, `on_event`, `on_tick`, `on_exit`);
//!   [`script::record`] is where records and values become Rhai values;
//! - [`metrics`]: the registry scripts write into;
//! - [`event`]: what scripts emit, and its text and JSON forms;
//! - [`record`]: saving raw records of a run and replaying them without a kernel;
//! - [`sinks`]: where the daemon's events go (stdout, a rotating file, Loki, the
//!   live `/events` stream);
//! - [`http`]: the daemon's endpoints (`/metrics`, `/status`, `/events`, ...);
//! - [`daemon`]: the node agent: config, script directory watch, validate-then-swap
//!   reloads, self-metrics, shutdown;
//! - [`panic`]: a panic in one script's work contained to that work;
//! - [`privileges`]: the capabilities the daemon keeps, the rest dropped at start,
//!   no_new_privs and a seccomp filter;
//! - [`cli`]: `sonde run`, `sonde daemon`, `sonde events`, `sonde probes`, `sonde check`.

pub mod bpf;
pub mod btf;
pub mod cli;
pub mod daemon;
pub mod event;
pub mod http;
pub mod label;
pub mod memory;
pub mod metrics;
pub mod netlink;
pub mod panic;
pub mod pods;
pub mod privileges;
pub mod record;
pub mod script;
pub mod sinks;
pub mod sources;
#[doc(hidden)]
pub mod testkit;
