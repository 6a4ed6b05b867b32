//! Every shared-data key, and the version in their names: the contract between workers and between
//! module versions in a rollout (a layout change takes `v2`; see the design document's table).

macro_rules! versioned {
    ($name:literal) => {
        concat!("entra-obo-filter/v1/", $name)
    };
}

/// `slot/<n>`: one slot of the token cache (`token_cache`).
pub const SLOT_PREFIX: &str = versioned!("slot/");
/// `claim/<n>`: the lease on slot `n`'s exchange (`lease`); an older name, kept as part of `v1`.
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
