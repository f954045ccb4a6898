//! The built-in policies, compiled from `policies/` by the build and embedded in the
//! binary, so the gateway runs them with no file of its own.

/// A built-in policy: its name in configurations and its component bytes.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name attachments use.
    pub name: &'static str,
    /// The component.
    pub component: &'static [u8],
}

/// Every built-in policy.
pub const ALL: &[Builtin] = &[
    Builtin { name: "key-auth", component: include_bytes!(env!("PORTICO_BUILTIN_KEY_AUTH")) },
    Builtin { name: "throttle", component: include_bytes!(env!("PORTICO_BUILTIN_THROTTLE")) },
    Builtin { name: "headers", component: include_bytes!(env!("PORTICO_BUILTIN_HEADERS")) },
];

/// The built-in policy with this name.
pub fn find(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name == name)
}
