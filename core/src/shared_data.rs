//! The shared-data layout: every key the filter keeps in Envoy's shared data, and the version in
//! their names.
//!
//! Shared data is what the workers have in common, and during a rollout two versions of the
//! module in one Envoy read and write the same keys. Two versions that share `v1` must agree on
//! every key below and on the encoding of its value (in the module named beside each); a change to
//! either takes a new version in every name, so that the old and the new module keep apart
//! instead of misreading each other.

/// A key's full name: the version, then the key.
macro_rules! versioned {
    ($name:literal) => {
        concat!("entra-obo-filter/v1/", $name)
    };
}

/// `slot/<n>`: one slot of the token cache (`token_cache`).
pub const SLOT_PREFIX: &str = versioned!("slot/");
/// `claim/<n>`: the lease on the exchange for the key in slot `n` (`lease`). The name is older
/// than the module's and stays, being part of `v1`.
pub const LEASE_PREFIX: &str = versioned!("claim/");
/// `backoff/<hash of endpoint, client, grant and scope>`: until when a scope backs off (`backoff`).
pub const BACKOFF_PREFIX: &str = versioned!("backoff/");
/// The keys of the last tokens dropped for an upstream's claims challenge (`drop_signal`).
pub const DROPPED: &str = versioned!("dropped");
/// Written only for its version (`version_for_creating`).
pub const CREATE_ANCHOR: &str = versioned!("claim-anchor");

use crate::host::Host;

/// A version that no key other than `CREATE_ANCHOR` can have, for a compare-and-swap that creates
/// a key ("create if absent" in one step: see the design document). None without shared data.
pub fn version_for_creating(host: &dyn Host) -> Option<u32> {
    host.shared_set(CREATE_ANCHOR, b"");
    let (_, version) = host.shared_get_versioned(CREATE_ANCHOR);
    (version != 0).then_some(version)
}
