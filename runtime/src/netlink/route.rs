//! rtnetlink: links, qdiscs with statistics, TC filters and the clsact qdisc.
//!
//! Requests are typed messages of `netlink-packet-route`; answers are read header
//! first ([`TcHeader`], [`LinkHeader`]), then only the attributes wanted, each
//! parsed by the crate's attribute type. A qdisc's options or a link's statistics
//! are never parsed, so a kind of qdisc the crate models strictly cannot fail a
//! dump, and a dump costs what it returns.
//!
//! Every function takes a [`Socket`] of `NETLINK_ROUTE`: its namespace is the
//! namespace answered for.
//!
//! ```no_run
//! use sonde::netlink::{route, Socket};
//! let mut s = Socket::open(libc::NETLINK_ROUTE).unwrap();
//! for q in route::qdiscs(&mut s).unwrap() {
//!     println!("{} {} {} bytes", q.ifindex, q.kind, q.bytes);
//! }
//! ```

use std::io;
use std::mem::size_of;

use netlink_packet_core::{parse_u64, NlaBuffer, NlasIterator, ParseableParametrized};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkHeader, LinkMessage, LinkMessageBuffer,
};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcMessageBuffer, TcOption,
    TcStats2,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Socket, ACK, DUMP, NLM_F_CREATE, NLM_F_EXCL};

/// `TC_H_CLSACT`: the clsact qdisc's parent.
pub const TC_H_CLSACT: u32 = 0xffff_fff1;
/// The handle of a clsact qdisc (`ffff:`).
pub const CLSACT_HANDLE: u32 = 0xffff_0000;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: the parent of clsact's ingress filters.
pub const INGRESS: u32 = 0xffff_fff2;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`: the parent of clsact's egress filters.
pub const EGRESS: u32 = 0xffff_fff3;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_STATS: u16 = 3;
const TCA_STATS2: u16 = 7;
const TCA_CHAIN: u16 = 11;
/// `TCA_STATS_PKT64`: the 64-bit packet count; the crate does not model it.
const TCA_STATS_PKT64: u16 = 8;
const IFLA_IFNAME: u16 = 3;

/// The attributes of a message body after its fixed header of `header_len` bytes.
fn attributes(body: &[u8], header_len: usize) -> NlasIterator<&[u8]> {
    NlasIterator::new(body.get(header_len..).unwrap_or(&[]))
}

/// A TC attribute parsed by the crate (`kind`: the qdisc or filter kind, for the
/// attributes whose layout depends on it); `None` when it does not parse.
fn tc_attribute(nla: &NlaBuffer<&[u8]>, kind: &str) -> Option<TcAttribute> {
    TcAttribute::parse_with_param(nla, kind).ok()
}

/// `(ifindex, name)` of every link of the socket's namespace.
pub fn links(sock: &mut Socket) -> io::Result<Vec<(u32, String)>> {
    let mut req = LinkMessage::default();
    // Names only: the kernel leaves the statistics out of each answer.
    req.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut out = Vec::new();
    sock.request(RouteNetlinkMessage::GetLink(req), DUMP, |kind, body| {
        if kind != libc::RTM_NEWLINK {
            return;
        }
        let Ok(header) = LinkHeader::parse(body) else {
            return;
        };
        let name = attributes(body, size_of::<LinkMessageBuffer>())
            .flatten()
            .filter(|nla| nla.kind() == IFLA_IFNAME)
            .find_map(
                |nla| match LinkAttribute::parse_with_param(&nla, AddressFamily::Unspec) {
                    Ok(LinkAttribute::IfName(n)) => Some(n),
                    _ => None,
                },
            );
        if let Some(name) = name {
            out.push((header.index, name));
        }
    })?;
    Ok(out)
}

/// One qdisc with its statistics, as `tc -s qdisc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Qdisc {
    pub ifindex: i32,
    /// The interface name in the qdisc's own namespace.
    pub ifname: String,
    pub kind: String,
    /// `"8001:"`, as tc prints it.
    pub handle: String,
    /// `"root"`, `"ingress"` or `"1:2"`.
    pub parent: String,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub requeues: u64,
    pub overlimits: u64,
    pub qlen: u64,
    pub backlog: u64,
}

/// A qdisc handle as tc prints it (`8001:`).
pub fn tc_handle(h: u32) -> String {
    format!("{:x}:", h >> 16)
}

/// A qdisc parent as tc prints it.
pub fn tc_parent(p: u32) -> String {
    match p {
        0xffff_ffff => "root".into(),
        TC_H_CLSACT => "ingress".into(),
        0 => "none".into(),
        p => format!("{:x}:{:x}", p >> 16, p & 0xffff),
    }
}

/// Parses one `RTM_NEWQDISC` body (`struct tcmsg` then attributes). The interface
/// name is left empty.
pub fn parse_qdisc(body: &[u8]) -> Option<Qdisc> {
    let header = TcHeader::parse(body).ok()?;
    let mut q = Qdisc {
        ifindex: header.index,
        handle: tc_handle(header.handle.into()),
        parent: tc_parent(header.parent.into()),
        ..Qdisc::default()
    };
    let mut have_stats2 = false;
    let mut pkt64 = None;
    let mut compat = None;
    for nla in attributes(body, size_of::<TcMessageBuffer>()).flatten() {
        match nla.kind() {
            TCA_KIND => {
                if let Some(TcAttribute::Kind(k)) = tc_attribute(&nla, "") {
                    q.kind = k;
                }
            }
            TCA_STATS2 => {
                have_stats2 = true;
                for s in NlasIterator::new(nla.value()).flatten() {
                    if s.kind() == TCA_STATS_PKT64 {
                        pkt64 = parse_u64(s.value()).ok();
                        continue;
                    }
                    match TcStats2::parse_with_param(&s, q.kind.as_str()) {
                        Ok(TcStats2::Basic(b)) => {
                            q.bytes = b.bytes;
                            q.packets = u64::from(b.packets);
                        }
                        Ok(TcStats2::Queue(s)) => {
                            q.qlen = u64::from(s.qlen);
                            q.backlog = u64::from(s.backlog);
                            q.drops = u64::from(s.drops);
                            q.requeues = u64::from(s.requeues);
                            q.overlimits = u64::from(s.overlimits);
                        }
                        _ => {}
                    }
                }
            }
            // `struct tc_stats`: what kernels without TCA_STATS2 send.
            TCA_STATS => {
                if let Some(TcAttribute::Stats(s)) = tc_attribute(&nla, &q.kind) {
                    compat = Some(s);
                }
            }
            _ => {}
        }
    }
    if let (false, Some(s)) = (have_stats2, compat) {
        q.bytes = s.bytes;
        q.packets = u64::from(s.packets);
        q.drops = u64::from(s.drops);
        q.overlimits = u64::from(s.overlimits);
        q.qlen = u64::from(s.qlen);
        q.backlog = u64::from(s.backlog);
    }
    if let Some(p) = pkt64 {
        q.packets = p;
    }
    Some(q)
}

/// Every qdisc of the socket's namespace with its statistics (names left empty).
pub fn qdiscs(sock: &mut Socket) -> io::Result<Vec<Qdisc>> {
    let mut out = Vec::new();
    // An all-zero tcmsg: every qdisc of every interface.
    let req = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
    sock.request(req, DUMP, |kind, body| {
        if kind == libc::RTM_NEWQDISC {
            out.extend(parse_qdisc(body));
        }
    })?;
    Ok(out)
}

/// One TC filter as the kernel lists it (`RTM_NEWTFILTER`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub ifindex: u32,
    /// [`INGRESS`] or [`EGRESS`] for clsact filters.
    pub parent: u32,
    pub priority: u16,
    /// Host byte order (`ETH_P_ALL` is 3).
    pub protocol: u16,
    /// 0 for the entry the kernel lists first for each priority (the classifier
    /// instance itself, no filter of its own).
    pub handle: u32,
    pub chain: u32,
    pub kind: String,
    /// `TCA_BPF_NAME`: what the loader called it (sonde: the program's function name).
    pub bpf_name: Option<String>,
    pub bpf_id: Option<u32>,
    pub bpf_tag: Option<[u8; 8]>,
}

/// `tcm_info` of a filter: priority above, protocol (network order) below.
fn filter_info(priority: u16, protocol: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(protocol.to_be())
}

/// Parses one `RTM_NEWTFILTER` body (`struct tcmsg`, then attributes).
pub fn parse_filter(body: &[u8]) -> Option<Filter> {
    let header = TcHeader::parse(body).ok()?;
    let mut f = Filter {
        ifindex: header.index as u32,
        handle: header.handle.into(),
        parent: header.parent.into(),
        priority: (header.info >> 16) as u16,
        protocol: u16::from_be(header.info as u16),
        ..Filter::default()
    };
    for nla in attributes(body, size_of::<TcMessageBuffer>()).flatten() {
        match nla.kind() {
            TCA_KIND | TCA_CHAIN => match tc_attribute(&nla, &f.kind) {
                Some(TcAttribute::Kind(k)) => f.kind = k,
                Some(TcAttribute::Chain(c)) => f.chain = c,
                _ => {}
            },
            // A bpf filter's options, one by one: another kind's are not read.
            TCA_OPTIONS if f.kind == "bpf" => {
                for o in NlasIterator::new(nla.value()).flatten() {
                    match TcOption::parse_with_param(&o, "bpf") {
                        Ok(TcOption::Bpf(TcFilterBpfOption::ProgName(n))) => f.bpf_name = Some(n),
                        Ok(TcOption::Bpf(TcFilterBpfOption::ProgId(id))) => f.bpf_id = Some(id),
                        Ok(TcOption::Bpf(TcFilterBpfOption::ProgTag(t))) => f.bpf_tag = Some(t),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

fn tc_message(ifindex: u32, handle: u32, parent: u32, info: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = ifindex as i32;
    m.header.handle = TcHandle::from(handle);
    m.header.parent = TcHandle::from(parent);
    m.header.info = info;
    m
}

/// Every filter on the qdisc parent `parent` of `ifindex`, every chain, with the
/// per-priority entries (`handle` 0).
pub fn filters(sock: &mut Socket, ifindex: u32, parent: u32) -> io::Result<Vec<Filter>> {
    let mut out = Vec::new();
    let req = RouteNetlinkMessage::GetTrafficFilter(tc_message(ifindex, 0, parent, 0));
    sock.request(req, DUMP, |kind, body| {
        if kind == libc::RTM_NEWTFILTER {
            out.extend(parse_filter(body));
        }
    })?;
    Ok(out)
}

/// Deletes the filter `f` (as listed by [`filters`]).
pub fn delete_filter(sock: &mut Socket, f: &Filter) -> io::Result<()> {
    let mut m = tc_message(
        f.ifindex,
        f.handle,
        f.parent,
        filter_info(f.priority, f.protocol),
    );
    m.attributes.push(TcAttribute::Kind(f.kind.clone()));
    m.attributes.push(TcAttribute::Chain(f.chain));
    sock.request(RouteNetlinkMessage::DelTrafficFilter(m), ACK, |_, _| {})
}

/// Adds a clsact qdisc to `ifindex`; `EEXIST` when it has one already.
pub fn add_clsact(sock: &mut Socket, ifindex: u32) -> io::Result<()> {
    let mut m = tc_message(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    sock.request(
        RouteNetlinkMessage::NewQueueDiscipline(m),
        ACK | NLM_F_CREATE | NLM_F_EXCL,
        |_, _| {},
    )
}

/// Deletes the clsact qdisc of `ifindex`, and with it any filter left on it.
pub fn delete_clsact(sock: &mut Socket, ifindex: u32) -> io::Result<()> {
    let m = tc_message(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    sock.request(RouteNetlinkMessage::DelQueueDiscipline(m), ACK, |_, _| {})
}

/// Interfaces of the socket's namespace with a clsact qdisc, ascending.
pub fn clsact_interfaces(sock: &mut Socket) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let req = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
    sock.request(req, DUMP, |kind, body| {
        if kind != libc::RTM_NEWQDISC {
            return;
        }
        let Ok(header) = TcHeader::parse(body) else {
            return;
        };
        let clsact = attributes(body, size_of::<TcMessageBuffer>())
            .flatten()
            .filter(|nla| nla.kind() == TCA_KIND)
            .any(
                |nla| matches!(tc_attribute(&nla, ""), Some(TcAttribute::Kind(k)) if k == "clsact"),
            );
        if clsact {
            out.push(header.index as u32);
        }
    })?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    /// An `RTM_NEWTFILTER` body as the kernel sends it for a cls_bpf filter.
    pub(crate) fn bpf_filter_message(
        prio: u16,
        handle: u32,
        name: &str,
        tag: [u8; 8],
        id: u32,
    ) -> Vec<u8> {
        let mut m = tc_message(7, handle, INGRESS, filter_info(prio, 0x0003));
        m.attributes.push(TcAttribute::Kind("bpf".into()));
        m.attributes.push(TcAttribute::Chain(0));
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
            TcOption::Bpf(TcFilterBpfOption::ProgTag(tag)),
        ]));
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    #[test]
    fn filter_message_parses() {
        let tag = [0x48, 0xc2, 0xf5, 0x6e, 0x5c, 0x83, 0x07, 0xce];
        let f = parse_filter(&bpf_filter_message(
            0x5d00,
            0x5d10_0301,
            "tc_ingress",
            tag,
            354,
        ))
        .unwrap();
        assert_eq!(
            (f.ifindex, f.parent, f.priority, f.protocol, f.handle, f.chain),
            (7, INGRESS, 0x5d00, 3, 0x5d10_0301, 0)
        );
        assert_eq!(f.kind, "bpf");
        assert_eq!(f.bpf_name.as_deref(), Some("tc_ingress"));
        assert_eq!((f.bpf_id, f.bpf_tag), (Some(354), Some(tag)));
        assert!(parse_filter(&[0; 10]).is_none());
    }

    #[test]
    fn qdisc_message_parses() {
        // Messages captured from a 6.18 kernel: `lo`'s noqueue and eth0's pfifo_fast,
        // which `tc -s qdisc` showed as "Sent 1438437 bytes 17761 pkt (dropped 0,
        // overlimits 0 requeues 0) backlog 0b 0p".
        let eth0 = parse_qdisc(include_bytes!("testdata/rtm_newqdisc_eth0.bin")).unwrap();
        assert_eq!(
            (eth0.ifindex, eth0.kind.as_str(), eth0.parent.as_str()),
            (4, "pfifo_fast", "root")
        );
        assert_eq!((eth0.bytes, eth0.packets), (1438437, 17761));
        assert_eq!(
            (
                eth0.drops,
                eth0.overlimits,
                eth0.requeues,
                eth0.backlog,
                eth0.qlen
            ),
            (0, 0, 0, 0, 0)
        );
        let q = parse_qdisc(include_bytes!("testdata/rtm_newqdisc.bin")).unwrap();
        assert_eq!(q.kind, "noqueue");
        assert_eq!(q.parent, "root");
        assert_eq!(q.handle, "0:");
        assert_eq!(tc_parent(0x0001_0002), "1:2");
        assert_eq!(tc_handle(0x8001_0000), "8001:");
    }

    #[test]
    fn links_of_this_namespace_include_the_loopback() {
        let mut s = Socket::open(libc::NETLINK_ROUTE).unwrap();
        let l = links(&mut s).unwrap();
        assert!(l.iter().any(|(i, n)| *i == 1 && n == "lo"), "{l:?}");
    }
}
