//! Which configured target (and so which scope) a request is for: first match wins.

use crate::config::Target;

/// A target's `host`: an exact name, or `*.suffix` for any subdomain (never the bare suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot, lowercase: `.example.com`.
    AnySubdomainOf(String),
}

impl HostPattern {
    /// Parses a configured host; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let lower = raw.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        if name.is_empty() {
            return Err("must name a host, such as api.example.com or *.example.com".into());
        }
        if !is_host_name(name) {
            return Err(format!(
                "'{raw}' is not a host name: no scheme, port, path or spaces, and '*' only as a leading '*.'"
            ));
        }
        Ok(if wildcard {
            HostPattern::AnySubdomainOf(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::AnySubdomainOf(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

fn is_host_name(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// The host of an `:authority`, without port or trailing dot.
pub fn authority_host(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rfind(':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The first target (and its index) whose host matches `authority` and whose path prefix (if
/// any) starts `path`.
pub fn find_target<'a>(
    targets: &'a [Target],
    authority: &str,
    path: &str,
) -> Option<(usize, &'a Target)> {
    let host = authority_host(authority);
    targets.iter().enumerate().find(|(_, t)| {
        t.host.matches(host)
            && t.path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, prefix: Option<&str>, scope: &str) -> Target {
        Target {
            host: HostPattern::parse(host).unwrap(),
            path_prefix: prefix.map(str::to_string),
            provider: 0,
            resource: scope.to_string(),
        }
    }

    fn scope_for<'a>(targets: &'a [Target], authority: &str, path: &str) -> Option<&'a str> {
        find_target(targets, authority, path).map(|(_, t)| t.resource.as_str())
    }

    #[test]
    fn exact_host_matches_case_insensitively_and_ignores_port() {
        let t = [target("API.example.com", None, "s")];
        assert_eq!(scope_for(&t, "api.example.com", "/"), Some("s"));
        assert_eq!(scope_for(&t, "Api.Example.COM:8443", "/x"), Some("s"));
        assert_eq!(scope_for(&t, "api.example.com.", "/"), Some("s"));
        assert_eq!(scope_for(&t, "other.example.com", "/"), None);
        assert_eq!(scope_for(&t, "xapi.example.com", "/"), None);
    }

    #[test]
    fn wildcard_matches_any_subdomain_but_never_the_bare_domain() {
        let t = [target("*.team.svc.cluster.local", None, "s")];
        assert_eq!(scope_for(&t, "api.team.svc.cluster.local", "/"), Some("s"));
        assert_eq!(
            scope_for(&t, "a.b.team.svc.cluster.local:80", "/"),
            Some("s")
        );
        assert_eq!(scope_for(&t, "team.svc.cluster.local", "/"), None);
        assert_eq!(scope_for(&t, "evilteam.svc.cluster.local", "/"), None);
        assert_eq!(scope_for(&t, ".team.svc.cluster.local", "/"), None);
    }

    #[test]
    fn path_prefix_narrows_a_target() {
        let t = [
            target("api.example.com", Some("/v2/"), "v2"),
            target("api.example.com", None, "any"),
        ];
        assert_eq!(scope_for(&t, "api.example.com", "/v2/users"), Some("v2"));
        assert_eq!(scope_for(&t, "api.example.com", "/v1/users"), Some("any"));
    }

    #[test]
    fn first_matching_target_wins() {
        let t = [
            target("*.example.com", None, "first"),
            target("api.example.com", None, "second"),
        ];
        assert_eq!(scope_for(&t, "api.example.com", "/"), Some("first"));
    }

    #[test]
    fn ipv6_authority_keeps_its_brackets() {
        assert_eq!(authority_host("[::1]:8080"), "[::1]");
        assert_eq!(authority_host("[::1]"), "[::1]");
        let t = [target("[::1]", None, "v6")];
        assert_eq!(scope_for(&t, "[::1]:8080", "/"), Some("v6"));
    }

    #[test]
    fn non_ascii_authority_never_panics_or_matches() {
        let t = [target("*.example.com", None, "s")];
        assert_eq!(scope_for(&t, "é.example.co", "/"), None);
        assert_eq!(scope_for(&t, "ééééééééééééé", "/"), None);
    }
}
