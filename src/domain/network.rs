//! Networks and trusted proxies (`http.trusted_proxies`): which addresses a
//! request's `X-Forwarded-For` hops may be believed from. Pure values; the
//! HTTP shell applies them to requests (`http::client_ip`).

use std::net::IpAddr;
use std::sync::Arc;

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `http.trusted_proxies`, parsed; empty: the TCP peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<Network>>);

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR blocks; empty: none.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let networks = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies(Arc::new(networks)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For`
    /// values (in header order): walking from the nearest hop outwards,
    /// the first address that is not a trusted proxy. A hop that is not an
    /// address ends the walk at the last trusted one.
    pub fn client_ip<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let mut client = peer?.to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.join(",")).unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(Network::parse("127.0.0.1")
            .unwrap()
            .contains(ip("::ffff:127.0.0.1")));
        assert!(Network::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let none = TrustedProxies::default();
        let client = none.client_ip(Some(ip("203.0.113.9")), ["1.2.3.4"].into_iter());
        assert_eq!(client, Some(ip("203.0.113.9")));
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        let peer = Some(ip("127.0.0.1"));
        // A client that forges the header only adds hops further out.
        let client = proxies.client_ip(peer, ["6.6.6.6, 198.51.100.7", "10.0.0.2"].into_iter());
        assert_eq!(client, Some(ip("198.51.100.7")));
        // No header: the proxy itself.
        assert_eq!(proxies.client_ip(peer, std::iter::empty()), peer);
        // Only trusted hops: the outermost.
        assert_eq!(
            proxies.client_ip(peer, ["10.0.0.3, 10.0.0.2"].into_iter()),
            Some(ip("10.0.0.3"))
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            proxies.client_ip(peer, ["198.51.100.7, junk, 10.0.0.2"].into_iter()),
            Some(ip("10.0.0.2"))
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.client_ip(Some(ip("198.51.100.1")), ["1.2.3.4"].into_iter()),
            Some(ip("198.51.100.1"))
        );
    }
}
