//! Locating a SIP server from a host name (RFC 3263): which NAPTR and SRV records to follow and
//! in which order to try the targets they name (RFC 2782). The lookups themselves are the
//! driver's; this module only decides from their answers.

use crate::transport::Transport;

/// A NAPTR record, as far as RFC 3263 uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    pub replacement: String,
}

/// An SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The port of a server named without one and found without SRV (RFC 3261 section 19.1.2).
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls => 5061,
        Transport::Udp | Transport::Tcp => 5060,
    }
}

/// The NAPTR service field that leads to `transport` (RFC 3263 section 4.1).
pub fn naptr_service(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "SIP+D2U",
        Transport::Tcp => "SIP+D2T",
        Transport::Tls => "SIPS+D2T",
    }
}

/// The SRV owner name of `domain` for `transport` when no NAPTR record names one.
pub fn srv_name(transport: Transport, domain: &str) -> String {
    let domain = domain.trim_end_matches('.');
    match transport {
        Transport::Udp => format!("_sip._udp.{domain}"),
        Transport::Tcp => format!("_sip._tcp.{domain}"),
        Transport::Tls => format!("_sips._tcp.{domain}"),
    }
}

/// The SRV names to query for `transport`: those the domain's NAPTR records offer for it, in
/// their order and preference, else the standard name (RFC 3263 section 4.1: no NAPTR record,
/// or none for a transport we use, leads to the SRV query of our own).
pub fn srv_names(domain: &str, transport: Transport, naptr: &[Naptr]) -> Vec<String> {
    let service = naptr_service(transport);
    let mut offered: Vec<&Naptr> = naptr
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s") && r.service.eq_ignore_ascii_case(service))
        .filter(|r| !r.replacement.is_empty() && r.replacement != ".")
        .collect();
    offered.sort_by_key(|r| (r.order, r.preference));
    let mut names: Vec<String> = Vec::new();
    for record in offered {
        let name = record.replacement.trim_end_matches('.').to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push(srv_name(transport, domain));
    }
    names
}

/// SRV records in the order to try them (RFC 2782): lowest priority first; within one priority
/// a weighted random order, `random(n)` giving a number in `0..=n`. A lone record with the
/// target "." says the service is not offered: nothing to try.
pub fn order_srv(records: Vec<Srv>, mut random: impl FnMut(u32) -> u32) -> Vec<Srv> {
    let mut records: Vec<Srv> = records
        .into_iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .collect();
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        // Zero weights first, so that they are picked only rarely when others weigh more.
        let mut pool: Vec<Srv> = group.iter().filter(|r| r.weight == 0).cloned().collect();
        pool.extend(group.iter().filter(|r| r.weight > 0).cloned());
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|r| u32::from(r.weight)).sum();
            let pick = random(total).min(total);
            let mut running = 0u32;
            let index = pool
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(pool.remove(index));
        }
        rest = tail;
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn naptr(order: u16, preference: u16, service: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: "S".into(),
            service: service.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn naptr_records_for_our_transport_give_the_srv_names_in_order() {
        let records = [
            naptr(20, 10, "SIP+D2U", "_sip._udp.b.example."),
            naptr(10, 20, "SIP+D2T", "_sip._tcp.example."),
            naptr(10, 10, "SIP+D2U", "_sip._udp.a.example."),
            naptr(10, 5, "SIPS+D2T", "_sips._tcp.example."),
        ];
        assert_eq!(
            srv_names("example.com", Transport::Udp, &records),
            ["_sip._udp.a.example", "_sip._udp.b.example"]
        );
        assert_eq!(
            srv_names("example.com", Transport::Tls, &records),
            ["_sips._tcp.example"]
        );
    }

    #[test]
    fn without_a_naptr_record_for_the_transport_the_standard_srv_name_is_asked() {
        assert_eq!(
            srv_names("example.com.", Transport::Tcp, &[]),
            ["_sip._tcp.example.com"]
        );
        let udp_only = [naptr(10, 10, "SIP+D2U", "_sip._udp.example.com.")];
        assert_eq!(
            srv_names("example.com", Transport::Tls, &udp_only),
            ["_sips._tcp.example.com"]
        );
        // A terminal record that is not "S" (an "A" or "U" rewrite) is not followed here.
        let mut a_flag = naptr(10, 10, "SIP+D2U", "sip.example.com.");
        a_flag.flags = "A".into();
        assert_eq!(
            srv_names("example.com", Transport::Udp, &[a_flag]),
            ["_sip._udp.example.com"]
        );
    }

    #[test]
    fn srv_order_is_by_priority_then_by_weight() {
        // random(n) = n picks the last of the running sums: the heaviest when it comes last.
        let ordered = order_srv(
            vec![srv(20, 0, "c."), srv(10, 1, "a."), srv(10, 9, "b.")],
            |n| n,
        );
        let targets: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["b.", "a.", "c."]);
        // random(n) = 0 picks the first: the zero weights are put first for that.
        let ordered = order_srv(vec![srv(10, 5, "a."), srv(10, 0, "z.")], |_| 0);
        assert_eq!(ordered[0].target, "z.");
    }

    #[test]
    fn a_dot_target_offers_nothing() {
        assert!(order_srv(vec![srv(0, 0, ".")], |n| n).is_empty());
    }

    proptest! {
        #[test]
        fn every_usable_record_is_tried_once_in_priority_order(
            records in proptest::collection::vec((0u16..4, 0u16..100, "[a-c.]{1,3}"), 0..12),
            seed in any::<u64>(),
        ) {
            let records: Vec<Srv> = records
                .into_iter()
                .map(|(p, w, t)| srv(p, w, &t))
                .collect();
            let mut state = seed;
            let ordered = order_srv(records.clone(), |n| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as u32) % (n.saturating_add(1))
            });
            let mut expected: Vec<Srv> = records.into_iter().filter(|r| r.target != ".").collect();
            prop_assert_eq!(ordered.len(), expected.len());
            prop_assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
            for record in &ordered {
                let at = expected.iter().position(|r| r == record);
                prop_assert!(at.is_some());
                if let Some(at) = at {
                    expected.remove(at);
                }
            }
        }
    }
}
