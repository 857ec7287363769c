//! Who the client is when trusted proxies stand in front of the gateway: the
//! address the account throttle keys on and the upstream's `X-Real-IP`, so
//! both always name the same client.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::Cidr;

/// The client address for a request from `peer`. From an untrusted peer that
/// is the peer itself, whatever it claims. From a trusted proxy it is the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy:
/// every entry left of it was written by someone we do not trust (the usual
/// right-to-left walk). An entry that is not an address stops the walk at
/// the last hop we could name.
pub(crate) fn client_address(
    peer: IpAddr,
    peer_trusted: bool,
    headers: &HeaderMap,
    trusted_proxies: &[Cidr],
) -> IpAddr {
    if !peer_trusted {
        return peer;
    }
    // Several X-Forwarded-For fields are one comma-separated list (RFC 9110 §5.3).
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(addr) = parse_entry(entry) else {
            break;
        };
        client = addr;
        if !trusted_proxies.iter().any(|cidr| cidr.contains(addr)) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443` or
/// `192.0.2.1:443`: proxies differ in whether they add the port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(addr) = entry.parse() {
        return Some(addr);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    entry
        .rsplit_once(':')
        .and_then(|(ip, port)| port.parse::<u16>().ok().and(ip.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = client_address(PEER, false, &headers(&["198.51.100.7"]), &[]);
        assert_eq!(got, PEER);
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let got = client_address(
            PEER,
            true,
            &headers(&["1.1.1.1, 198.51.100.7", "10.0.0.9"]),
            &trusted,
        );
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn without_forwarded_for_the_trusted_peer_is_the_client() {
        let got = client_address(PEER, true, &HeaderMap::new(), &cidrs(&["10.0.0.0/8"]));
        assert_eq!(got, PEER);
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_named_hop() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let got = client_address(PEER, true, &headers(&["1.1.1.1, junk, 10.0.0.2"]), &trusted);
        assert_eq!(got, "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        let got = client_address(PEER, true, &headers(&["[2001:db8::1]:443"]), &[]);
        assert_eq!(got, "2001:db8::1".parse::<IpAddr>().unwrap());
        let got = client_address(PEER, true, &headers(&["192.0.2.1:80"]), &[]);
        assert_eq!(got, "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
