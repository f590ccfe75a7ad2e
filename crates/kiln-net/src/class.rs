//! The range an address belongs to, as far as outbound rules care.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of range an address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Anything not listed below.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64/10), benchmarking (198.18/15), unique local (fc00::/7).
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// Cloud instance metadata services (169.254.169.254, 169.254.170.2, fd00:ec2::254,
    /// 100.100.100.200, 168.63.129.16).
    Metadata,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 240/4, broadcast, 192.0.0.0/24 and other special-purpose space.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud-metadata",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// The class of `ip`; IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are judged by that address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddressClass::Metadata
    } else if a == 0 {
        AddressClass::Unspecified
    } else if a == 127 {
        AddressClass::Loopback
    } else if a == 169 && b == 254 {
        AddressClass::LinkLocal
    } else if a == 10
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || (a == 100 && (64..=127).contains(&b))
        || (a == 198 && (18..=19).contains(&b))
    {
        AddressClass::Private
    } else if (224..=239).contains(&a) {
        AddressClass::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return AddressClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible)
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 64:ff9b::/96 (NAT64)
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 2002::/16 (6to4) carries the IPv4 address in bits 16..48
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        x if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        x if x & 0xfe00 == 0xfc00 || x & 0xffc0 == 0xfec0 => AddressClass::Private,
        x if x & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_told_apart() {
        let cases = [
            ("169.254.169.254", AddressClass::Metadata),
            ("169.254.0.7", AddressClass::LinkLocal),
            ("127.0.0.53", AddressClass::Loopback),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("100.64.0.1", AddressClass::Private),
            ("0.1.2.3", AddressClass::Unspecified),
            ("239.1.1.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Reserved),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("2002:a9fe:a9fe::1", AddressClass::Metadata),
            ("64:ff9b::7f00:1", AddressClass::Loopback),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("fd01::1", AddressClass::Private),
            ("ff02::1", AddressClass::Multicast),
            ("2001:4860:4860::8888", AddressClass::Public),
            ("1.1.1.1", AddressClass::Public),
        ];
        for (ip, class) in cases {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
        }
    }
}
