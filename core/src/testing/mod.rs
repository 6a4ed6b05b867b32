//! Test scaffolding for the whole crate: the fake host, the allocation counter, the test key, the
//! Entra ID fixtures, and the helpers that send a request through the filter.

pub mod allocations;
mod fake_host;
mod requests;
pub mod test_key;

pub use fake_host::FakeHost;
pub use requests::*;

/// A subject token (a JWT valid until the fake clock's start plus an hour) of user `subject-1`.
pub const SUBJECT_1: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InN1YmplY3QtMSJ9.c2ln";
/// Alice's, Bob's and U's subject tokens, valid as long.
pub const ALICE: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6ImFsaWNlIn0.c2ln";
pub const BOB: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6ImJvYiJ9.c2ln";
pub const U: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InUifQ.c2ln";
pub const BEARER_U: &str =
    "Bearer eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InUifQ.c2ln";

/// The file `name` of the recorded Entra ID answers in `fixtures/entra/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/entra/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
