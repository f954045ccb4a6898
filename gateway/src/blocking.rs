//! Blocking conditions as a snapshot serves them: client networks checked before routing,
//! applications and users checked once the request chain has authenticated the caller.
//! (Blocked APIs are marked on their operations when the snapshot is built.) With no
//! condition, each check is one test of an empty collection.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::contract::environment::Blocked;
use crate::keys::Identity;
use crate::network::Network;

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
