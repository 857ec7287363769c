//! CIDR blocks for `[server] trusted_proxies`.

use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            // A v4 peer seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_matches(&net.octets(), &a.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_matches(&net.octets(), &a.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], addr: &[u8], prefix_len: u8) -> bool {
    let full_bytes = usize::from(prefix_len / 8);
    let rest_bits = prefix_len % 8;
    if net.get(..full_bytes) != addr.get(..full_bytes) {
        return false;
    }
    if rest_bits == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest_bits);
    match (net.get(full_bytes), addr.get(full_bytes)) {
        (Some(n), Some(a)) => n & mask == a & mask,
        _ => false,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_text {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_prefix() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        let odd: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.1.100".parse().unwrap()));
        let single: Cidr = "127.0.0.1".parse().unwrap();
        assert!(single.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!single.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_blocks() {
        for bad in ["", "10.0.0.0/33", "::1/129", "host/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
