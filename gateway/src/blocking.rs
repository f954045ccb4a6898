//! Blocking conditions as a snapshot serves them: client networks checked before routing,
//! applications and users checked once the request chain has authenticated the caller.
//! (Blocked APIs are marked on their operations when the snapshot is built.) With no
//! condition, each check is one test of an empty collection.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::contract::environment::Blocked;
use crate::keys::Identity;

/// An IP network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The conditions of one snapshot.
#[derive(Debug, Default)]
pub struct Blocking {
    networks: Vec<Network>,
    applications: HashSet<String>,
    users: HashSet<String>,
}

impl Blocking {
    /// Build from a validated configuration (unparseable networks were refused by validation).
    pub fn new(blocked: &Blocked) -> Self {
        Self {
            networks: blocked.ips.iter().filter_map(|ip| Network::parse(ip).ok()).collect(),
            applications: blocked.applications.iter().cloned().collect(),
            users: blocked.users.iter().cloned().collect(),
        }
    }

    /// Whether requests from `ip` are refused.
    pub fn client_blocked(&self, ip: IpAddr) -> bool {
        !self.networks.is_empty() && self.networks.iter().any(|n| n.contains(ip))
    }

    /// Whether this caller's application or user is refused.
    pub fn caller_blocked(&self, identity: Option<&Identity>) -> bool {
        if self.applications.is_empty() && self.users.is_empty() {
            return false;
        }
        let Some(identity) = identity else { return false };
        identity.application.as_ref().is_some_and(|a| self.applications.contains(a))
            || identity.user.as_ref().is_some_and(|u| self.users.contains(u))
    }
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
    fn callers_are_blocked_by_application_or_user() {
        let blocking = Blocking::new(&Blocked { applications: vec!["app-1".into()], users: vec!["mallory".into()], ..Blocked::default() });
        let caller = |application: &str, user: &str| Identity {
            method: "api-key",
            application: Some(application.into()),
            subscription: None,
            tier: None,
            user: Some(user.into()),
            scopes: Vec::new(),
            subscriptions: None,
        };
        assert!(blocking.caller_blocked(Some(&caller("app-1", "alice"))));
        assert!(blocking.caller_blocked(Some(&caller("app-2", "mallory"))));
        assert!(!blocking.caller_blocked(Some(&caller("app-2", "alice"))));
        assert!(!blocking.caller_blocked(None));
    }
}
