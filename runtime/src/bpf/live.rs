//! A program loaded, attached and ready to read: its maps, its ring buffers (with the
//! descriptors to wait on), and the decoding environment its records need. Shared by `sonde run`
//! and the daemon, whose script reloads keep a [`Live`] program attached while the
//! script around it changes.
//!
//! ```no_run
//! # fn f() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use sonde::bpf::{catalog, live::Live};
//! use sonde::btf::KernelBtf;
//! use sonde::pods::HostResolver;
//!
//! let btf = KernelBtf::locate(None)?;
//! let spec = catalog::find("tcp_reset").unwrap();
//! let mut live = Live::start(spec, &[], &btf, Arc::new(HostResolver::new("node-1")), false)?;
//! live.wait(std::time::Duration::from_secs(1))?;
//! live.drain(u64::MAX, |_source, _bytes, record| { let _ = record.map(|r| r.get("kind")); true });
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{MapData, RingBuf};

use super::decode::{DecodeEnv, DecodeError, Decoder, Record};
use super::ksyms::Symbols;
use super::{catalog::ProgramSpec, BpfError, Loaded};
use crate::btf::KernelBtf;
use crate::pods::PodResolver;
use crate::script::ParamValue;

/// A loaded program with its ring buffers.
pub struct Live {
    pub loaded: Loaded,
    pub env: Arc<DecodeEnv>,
    /// `enum skb_drop_reason` names, when the program's records or maps use them.
    pub drop_reasons: HashMap<u64, rhai::ImmutableString>,
    /// Ring buffer map names, in source order.
    pub sources: Vec<String>,
    rings: Vec<RingBuf<MapData>>,
    decoders: Vec<Decoder>,
}

impl Live {
    /// Loads and attaches `spec` (see [`super::load`]) and prepares its records'
    /// decoding: drop-reason names and kernel symbols are read only when a record or
    /// map of this program needs them. `record_notes` keeps every symbol and stack
    /// resolved while decoding, for recordings.
    pub fn start(
        spec: &'static ProgramSpec,
        params: &[(String, ParamValue)],
        btf: &KernelBtf,
        pods: Arc<dyn PodResolver>,
        record_notes: bool,
    ) -> Result<Live, BpfError> {
        let mut loaded = super::load(spec, params, btf)?;
        let table = loaded.maps.clone();
        let event_sources = loaded.take_sources();
        let needs = event_sources
            .iter()
            .fold(table.needs(), |acc, s| acc | s.decoder.needs());
        let drop_reasons = if needs.drop_reasons {
            super::drop_reason_names(btf)
        } else {
            HashMap::new()
        };
        let stack_table = table.clone();
        let env = Arc::new(DecodeEnv {
            pods,
            drop_reasons: drop_reasons.clone(),
            ksyms: if needs.symbols {
                Symbols::Kernel
            } else {
                Symbols::none()
            },
            stacks: Some(Box::new(move |id| stack_table.stack(id))),
            notes: record_notes.then(|| Mutex::new(Vec::new())),
            pod_cache: Default::default(),
        });
        table.set_env(env.clone());
        let mut sources = Vec::with_capacity(event_sources.len());
        let mut rings = Vec::with_capacity(event_sources.len());
        let mut decoders = Vec::with_capacity(event_sources.len());
        for s in event_sources {
            sources.push(s.map);
            rings.push(s.ring);
            decoders.push(s.decoder);
        }
        Ok(Live {
            loaded,
            env,
            drop_reasons,
            sources,
            rings,
            decoders,
        })
    }

    /// The ring buffers' descriptors: each is readable when its ring has data and the
    /// kernel woke readers.
    pub fn fds(&self) -> Vec<RawFd> {
        self.rings.iter().map(|r| r.as_raw_fd()).collect()
    }

    /// Waits until a ring buffer has data or `timeout` passes (sleeps the whole
    /// timeout when there is no ring).
    pub fn wait(&self, timeout: std::time::Duration) -> std::io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads queued records, at most `limit`: `f(source index, raw bytes, decoded
    /// record)`, which returns whether to go on. Returns how many were read; fewer
    /// than `limit`, with `f` never saying stop, means the rings were emptied.
    pub fn drain(
        &mut self,
        limit: u64,
        mut f: impl FnMut(usize, &[u8], Result<Record, DecodeError>) -> bool,
    ) -> u64 {
        let mut n = 0;
        for (i, rb) in self.rings.iter_mut().enumerate() {
            while n < limit {
                let Some(item) = rb.next() else { break };
                n += 1;
                let decoded = self.decoders[i].record(&item, &self.env);
                if !f(i, &item, decoded) {
                    return n;
                }
            }
        }
        n
    }
}
