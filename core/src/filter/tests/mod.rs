//! The request path through `RequestFilter` and the `Worker` on the fake host, a file per concern.

mod assertion_source;
mod caller_token;
mod claims_challenges;
mod counters_and_logs;
mod delegation;
mod exchange;
mod failures;
mod grants;
mod hot_path;
mod refresh_ahead;
mod resource_indicators;
mod routing;
mod tenants;
mod workers;
