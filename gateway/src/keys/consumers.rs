//! Consumers' credentials that are known by a digest (API keys, client certificates), each
//! mapped to the identity of the consumer holding it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::Identity;
use crate::contract::Problem;
use crate::contract::environment::Consumer;

/// A consumer's identity when it presents a credential by `method`.
fn identity(consumer: &Consumer, method: &'static str) -> Identity {
    Identity {
        method,
        application: Some(consumer.application.clone().unwrap_or_else(|| consumer.name.clone())),
        subscription: None,
        tier: consumer.tier.clone(),
        user: consumer.user.clone(),
        scopes: consumer.scopes.clone(),
        subscriptions: consumer.subscriptions.clone().map(std::sync::Arc::new),
    }
}

/// The identities of `consumers` by the digests `credentials` gives for each (with the
/// path of each in the configuration; `None` for a malformed one, which
/// `snapshot::validate` reports and which is left out). A digest held by two consumers
/// is a problem, named by `what`.
pub(super) fn by_digest<'a, C>(
    consumers: &'a [Consumer],
    method: &'static str,
    what: &str,
    problems: &mut Vec<Problem>,
    credentials: C,
) -> HashMap<[u8; 32], Identity>
where
    C: Fn(usize, &'a Consumer) -> Vec<(String, Option<[u8; 32]>)>,
{
    let mut by_digest = HashMap::new();
    let mut owner = HashMap::<[u8; 32], usize>::new();
    for (i, consumer) in consumers.iter().enumerate() {
        let held = credentials(i, consumer);
        if held.is_empty() {
            continue;
        }
        let identity = identity(consumer, method);
        for (path, digest) in held {
            let Some(digest) = digest else { continue };
            match owner.entry(digest) {
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    by_digest.insert(digest, identity.clone());
                }
                Entry::Occupied(slot) if *slot.get() != i => problems
                    .push(Problem { path, reason: format!("this {what} is also given to consumer `{}`", consumers[*slot.get()].name) }),
                Entry::Occupied(_) => {}
            }
        }
    }
    by_digest
}
