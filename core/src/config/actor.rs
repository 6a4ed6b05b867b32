//! Checking delegation (RFC 8693 `actor`): a `token_exchange` provider names a `client_credentials`
//! provider whose token is sent as `actor_token`, once every provider is known.

use super::fields::{non_empty, ConfigError, Problems};
use super::raw::RawActor;
use super::types::{Actor, Grant, Provider, TOKEN_TYPE_ACCESS_TOKEN};
use super::validate::is_absolute_uri;

/// A provider's `actor` as written, with where it stands: its field prefix and its index (None
/// when the provider itself is invalid, and so already reported).
pub(super) struct WrittenActor {
    pub(super) prefix: String,
    pub(super) index: Option<usize>,
    pub(super) grant: Grant,
    pub(super) raw: RawActor,
}

/// Gives each provider its checked actor; `names` holds every provider's name, index and grant.
pub(super) fn resolve_actors(
    written: Vec<WrittenActor>,
    names: &[(String, Option<usize>, Grant)],
    providers: &mut [Provider],
    p: &mut Problems,
) {
    for actor in written.into_iter().filter(|a| a.raw.configured) {
        let field = |f: &str| format!("{}actor{f}", actor.prefix);
        if actor.grant != Grant::TokenExchange {
            p.0.push(ConfigError::new(
                field(""),
                format!(
                    "applies only to grant token_exchange (RFC 8693 delegation), not {}",
                    actor.grant.name()
                ),
            ));
            continue;
        }
        let raw = actor.raw;
        let named = match raw.provider {
            None => {
                let why =
                    "is required: the client_credentials provider whose token is the actor_token";
                p.0.push(ConfigError::new(field(".provider"), why));
                None
            }
            Some(wanted) => match names.iter().find(|(name, _, _)| *name == wanted) {
                None => {
                    let why = format!("no provider is named {wanted:?}");
                    p.0.push(ConfigError::new(field(".provider"), why));
                    None
                }
                Some((name, _, grant)) if *grant != Grant::ClientCredentials => {
                    let why = format!(
                        "must name a client_credentials provider: {name} has grant {}",
                        grant.name()
                    );
                    p.0.push(ConfigError::new(field(".provider"), why));
                    None
                }
                // An invalid actor provider is reported already.
                Some((_, index, _)) => *index,
            },
        };
        let scope = match raw.scope {
            Some(scope) => p.check(non_empty(&field(".scope"), scope)),
            None => {
                let why = "is required: the scope of the actor's client-credentials token";
                p.0.push(ConfigError::new(field(".scope"), why));
                None
            }
        };
        let token_type = match raw.token_type {
            None => Some(TOKEN_TYPE_ACCESS_TOKEN.to_string()),
            Some(t) if is_absolute_uri(&t) => Some(t),
            Some(t) => {
                let why = format!(
                    "must be a token type URI such as {TOKEN_TYPE_ACCESS_TOKEN}, not {t:?}"
                );
                p.0.push(ConfigError::new(field(".token_type"), why));
                None
            }
        };
        let (Some(index), Some(actor_index), Some(scope), Some(token_type)) =
            (actor.index, named, scope, token_type)
        else {
            continue;
        };
        let acting = &providers[actor_index];
        let key_client = [
            providers[index].client_id.as_str(),
            acting.token_endpoint.url.as_str(),
            acting.client_id.as_str(),
            scope.as_str(),
            token_type.as_str(),
        ]
        .join("\0");
        providers[index].actor = Some(Actor {
            provider: actor_index,
            scope,
            token_type,
            key_client,
        });
    }
}
