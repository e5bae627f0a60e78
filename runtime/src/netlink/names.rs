//! Interface names per network namespace, from rtnetlink link dumps.
//!
//! A name is looked up in the last link dump of its namespace. A dump answers for
//! [`FRESH`]; after that the next lookup dumps again, so a renamed, moved or deleted
//! interface shows its new name (or none) within it. An index missing from a dump
//! younger than [`MISS_RETRY`] stays missing without another dump: a burst of
//! records about an interface that is gone costs one dump, not one per record.
//! Readers that dump links anyway (the qdisc source) hand their dump over with
//! [`store`], which keeps the namespace's names fresh on every tick.
//!
//! ```no_run
//! use sonde::netlink::names;
//! println!("{:?}", names::own(1)); // Some("lo")
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{own_netns, route, with_socket, Family};
use crate::sources::Netns;

/// How long a link dump answers lookups.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long an index missing from a dump is not looked for again.
pub const MISS_RETRY: Duration = Duration::from_millis(100);

struct Dump {
    at: Instant,
    names: HashMap<u32, Arc<str>>,
}

static NAMES: Mutex<Option<HashMap<u64, Dump>>> = Mutex::new(None);

fn with_names<T>(f: impl FnOnce(&mut HashMap<u64, Dump>) -> T) -> T {
    let mut g = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// This process's namespace (never forgotten).
fn own_ns() -> &'static Netns {
    static OWN: OnceLock<Netns> = OnceLock::new();
    OWN.get_or_init(own_netns)
}

/// The name of interface `index` in this process's network namespace.
pub fn own(index: u32) -> Option<Arc<str>> {
    name(own_ns(), index)
}

/// The name of interface `index` in `ns`; `None` when `ns` has no such interface (or
/// its links cannot be listed).
pub fn name(ns: &Netns, index: u32) -> Option<Arc<str>> {
    let now = Instant::now();
    let cached = with_names(|m| {
        let d = m.get(&ns.inode)?;
        let age = now.saturating_duration_since(d.at);
        match d.names.get(&index) {
            Some(n) if age < FRESH => Some(Some(n.clone())),
            None if age < MISS_RETRY => Some(None),
            _ => None,
        }
    });
    if let Some(answer) = cached {
        return answer;
    }
    // The lock is not held while the kernel answers: lookups in other namespaces go
    // on meanwhile (two threads may both dump once; the later dump wins).
    match with_socket(ns, Family::Route, |s| {
        route::links(s).map_err(super::io_err("rtnetlink link dump"))
    }) {
        Ok(links) => store(ns, &links),
        Err(e) => {
            tracing::debug!(netns = ns.inode, error = %e, "cannot list interfaces");
            // Not asked again before MISS_RETRY; the names known are kept.
            with_names(|m| {
                m.entry(ns.inode)
                    .or_insert_with(|| Dump {
                        at: now,
                        names: HashMap::new(),
                    })
                    .at = now;
            });
        }
    }
    with_names(|m| m.get(&ns.inode).and_then(|d| d.names.get(&index).cloned()))
}

/// Replaces the names of `ns` with `links` (`(ifindex, name)`, a complete dump made
/// just now).
pub fn store(ns: &Netns, links: &[(u32, String)]) {
    let at = Instant::now();
    with_names(|m| {
        let old = m.remove(&ns.inode);
        // Names that did not change keep their allocation.
        let names = links
            .iter()
            .map(|(i, n)| {
                let keep = old
                    .as_ref()
                    .and_then(|o| o.names.get(i))
                    .filter(|o| ***o == **n)
                    .cloned();
                (*i, keep.unwrap_or_else(|| Arc::from(n.as_str())))
            })
            .collect();
        m.insert(ns.inode, Dump { at, names });
    });
}

/// [`store`] for this process's own namespace.
pub fn store_own(links: &[(u32, String)]) {
    store(own_ns(), links)
}

/// Forgets the names of namespaces not in `live` (this process's own excepted).
pub fn forget_except(live: &[Netns]) {
    let own = own_ns().inode;
    with_names(|m| m.retain(|inode, _| *inode == own || live.iter().any(|n| n.inode == *inode)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_is_named() {
        assert_eq!(own(1).as_deref(), Some("lo"), "index 1 is the loopback");
        assert_eq!(own(999_999), None);
    }

    #[test]
    fn a_dump_answers_hits_and_misses_until_it_is_old() {
        // A namespace no thread can join (no such inode): its names are only the
        // ones stored.
        let ns = Netns {
            inode: u64::MAX - 17,
            pid: std::process::id(),
            pids: Vec::new(),
            bind_mount: None,
        };
        store(&ns, &[(2, "eth0".into())]);
        assert_eq!(name(&ns, 2).as_deref(), Some("eth0"));
        assert_eq!(name(&ns, 3), None);
        // Old: the next lookup dumps again; a dump that fails keeps the names known.
        let old = Instant::now().checked_sub(FRESH).unwrap();
        with_names(|m| m.get_mut(&ns.inode).unwrap().at = old);
        assert_eq!(name(&ns, 2).as_deref(), Some("eth0"));
        assert!(
            with_names(|m| m[&ns.inode].at > old),
            "the failed dump counts as one"
        );
        forget_except(&[]);
        assert!(with_names(|m| !m.contains_key(&ns.inode)));
    }
}
