//! IP networks: parsed once, matched by prefix. Blocking conditions match client addresses
//! against them; [`UpstreamRule`] holds upstream addresses to an environment's allow and
//! deny lists, so that a publisher cannot point an API at the gateway's own admin port or
//! at a cloud metadata service unless an admin allowed it.

use std::fmt;
use std::net::IpAddr;

use crate::contract::environment::UpstreamNetworks;

/// An IP network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parse `192.0.2.7`, `198.51.100.0/24` or `2001:db8::/32`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => {
                prefix.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{text}`: the prefix must be 0 to {max}"))?
            }
        };
        Ok(Self { address, prefix })
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |full: u128, width: u32| if self.prefix == 0 { 0 } else { full >> (width - u32::from(self.prefix)) };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => bits(u32::from(net).into(), 32) == bits(u32::from(ip).into(), 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => bits(u128::from(net), 128) == bits(u128::from(ip), 128),
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The networks upstream addresses may be in: an address in an allowed network is
/// accepted, else one in a denied network is refused, else it is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UpstreamRule {
    allow: Vec<Network>,
    deny: Vec<Network>,
}

impl UpstreamRule {
    /// Build from a document's lists; the reason names the first entry that does not parse
    /// (`allow[1]: ...`).
    pub fn new(networks: &UpstreamNetworks) -> Result<Self, String> {
        let parse = |list: &[String], name: &str| {
            list.iter()
                .enumerate()
                .map(|(i, text)| Network::parse(text).map_err(|reason| format!("{name}[{i}]: {reason}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self { allow: parse(&networks.allow, "allow")?, deny: parse(&networks.deny, "deny")? })
    }

    /// Whether an upstream at `ip` may be called; the reason when not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match self.deny.iter().find(|n| n.contains(ip)) {
            Some(denied) => Err(format!("{ip} is in a denied upstream network ({denied}); an admin can allow it")),
            None => Ok(()),
        }
    }
}

/// Whether `host` (as a URL has it) is a loopback address or `localhost`: where plain HTTP
/// is accepted for a link that carries secrets.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let net = Network::parse("198.51.100.0/24").unwrap();
        assert!(net.contains("198.51.100.200".parse().unwrap()));
        assert!(!net.contains("198.51.101.1".parse().unwrap()));
        assert!(net.contains("::ffff:198.51.100.9".parse().unwrap()), "IPv4-mapped");
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("203.0.113.1".parse().unwrap()));
        let one = Network::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap()));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "::/129", "10.0.0.1/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_rule_denies_loopback_and_link_local_unless_allowed() {
        let default = UpstreamRule::new(&UpstreamNetworks::default()).unwrap();
        for denied in ["127.0.0.1", "127.1.2.3", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "::", "::ffff:127.0.0.1", "fd00:ec2::254"]
        {
            let error = default.check(denied.parse().unwrap()).unwrap_err();
            assert!(error.contains("denied upstream network"), "{denied}: {error}");
        }
        for fine in ["10.0.0.1", "192.168.1.1", "203.0.113.9", "2001:db8::1"] {
            assert!(default.check(fine.parse().unwrap()).is_ok(), "{fine}");
        }
        let networks = UpstreamNetworks { allow: vec!["127.0.0.1".into()], ..UpstreamNetworks::default() };
        let allowed = UpstreamRule::new(&networks).unwrap();
        assert!(allowed.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(allowed.check("127.0.0.2".parse().unwrap()).is_err(), "only what was allowed");
        let strict = UpstreamNetworks { allow: Vec::new(), deny: vec!["10.0.0.0/8".into()] };
        assert!(UpstreamRule::new(&strict).unwrap().check("10.1.2.3".parse().unwrap()).is_err());
        let bad = UpstreamNetworks { allow: vec!["nope".into()], deny: Vec::new() };
        assert!(UpstreamRule::new(&bad).unwrap_err().starts_with("allow[0]"));
    }
}
