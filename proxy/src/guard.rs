//! The guard for the provider's own network: destinations a lease may never reach, checked on
//! the address a name resolved to, right before connecting (so a name that resolves to a
//! private address, or an IP spelled in decimal or hex, gets no further than a literal would).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("destination {address} is in a guarded range ({range})")]
pub struct Guarded {
    /// The refused address.
    pub address: IpAddr,
    /// Which range it falls in.
    pub range: &'static str,
}

/// Which special destinations are refused. The default refuses all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard {
    /// Let leases reach loopback (127.0.0.0/8, ::1). Off by default; only tests and local demos,
    /// whose target servers live on loopback, turn it on.
    pub allow_loopback: bool,
}

impl Guard {
    /// Checks one resolved destination.
    pub fn check(&self, address: IpAddr) -> Result<(), Guarded> {
        let refuse = |range| Err(Guarded { address, range });
        match address {
            IpAddr::V4(v4) => match v4_range(v4) {
                Some("loopback") if self.allow_loopback => Ok(()),
                Some(range) => refuse(range),
                None => Ok(()),
            },
            IpAddr::V6(v6) => {
                // IPv4 inside IPv6 (mapped, compatible, NAT64): judge the IPv4 address.
                if let Some(v4) = embedded_v4(v6) {
                    return match v4_range(v4) {
                        Some("loopback") if self.allow_loopback => Ok(()),
                        Some(range) => refuse(range),
                        None => Ok(()),
                    };
                }
                match v6_range(v6) {
                    Some("loopback") if self.allow_loopback => Ok(()),
                    Some(range) => refuse(range),
                    None => Ok(()),
                }
            }
        }
    }
}

fn in_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn v4_range(address: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this network 0.0.0.0/8"),
        ([10, 0, 0, 0], 8, "private 10/8"),
        ([100, 64, 0, 0], 10, "CGNAT 100.64/10"),
        ([127, 0, 0, 0], 8, "loopback"),
        (
            [169, 254, 0, 0],
            16,
            "link-local 169.254/16 (cloud metadata)",
        ),
        ([172, 16, 0, 0], 12, "private 172.16/12"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments 192.0.0/24"),
        ([192, 0, 2, 0], 24, "documentation 192.0.2/24"),
        ([192, 88, 99, 0], 24, "6to4 relay 192.88.99/24"),
        ([192, 168, 0, 0], 16, "private 192.168/16"),
        ([198, 18, 0, 0], 15, "benchmarking 198.18/15"),
        ([198, 51, 100, 0], 24, "documentation 198.51.100/24"),
        ([203, 0, 113, 0], 24, "documentation 203.0.113/24"),
        ([224, 0, 0, 0], 4, "multicast 224/4"),
        ([240, 0, 0, 0], 4, "reserved 240/4 and broadcast"),
    ];
    RANGES
        .iter()
        .find(|(network, prefix, _)| in_v4(address, *network, *prefix))
        .map(|(_, _, name)| *name)
}

fn v6_range(address: Ipv6Addr) -> Option<&'static str> {
    let s = address.segments();
    if address.is_unspecified() {
        return Some("unspecified ::");
    }
    if address.is_loopback() {
        return Some("loopback");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("unique local fc00::/7");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local fe80::/10");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local fec0::/10");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("multicast ff00::/8");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation 2001:db8::/32");
    }
    if s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
        return Some("discard 100::/64");
    }
    None
}

/// The IPv4 address carried in an IPv6 one: mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = address.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && !(s[6] == 0 && s[7] <= 1))) {
        return Some(tail());
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &Guard, text: &str) -> bool {
        guard.check(text.parse().expect("address")).is_err()
    }

    #[test]
    fn every_special_range_is_refused_by_default() {
        let guard = Guard::default();
        for address in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.0.0.2",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:c0a8:0101::1",
        ] {
            assert!(refused(&guard, address), "{address} must be refused");
        }
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(!refused(&guard, address), "{address} must pass");
        }
    }

    #[test]
    fn loopback_is_allowed_only_when_asked_and_nothing_else_opens() {
        let guard = Guard {
            allow_loopback: true,
        };
        for address in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(!refused(&guard, address), "{address}");
        }
        for address in [
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::ffff:192.168.0.1",
        ] {
            assert!(refused(&guard, address), "{address}");
        }
        assert!(refused(&Guard::default(), "127.0.0.1"));
    }
}
