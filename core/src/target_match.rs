//! Which target (and so which scope) a request is for, read as Envoy's router reads it, so that a
//! token reaches only its target; what the router could read differently is refused (routing.md).

use crate::authority::{self, Authority};
use crate::request_path;

/// Where a token may go: every condition it has must hold (at least `host` or `cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Option<HostPattern>,
    pub cluster: Option<ClusterPattern>,
    pub path_prefix: Option<String>,
    pub provider: usize,
    /// What the token is asked for: the scope, or for `token_exchange` the audience.
    pub resource: String,
    /// RFC 8707 resource indicators, each sent as a `resource` parameter.
    pub indicators: Vec<String>,
}

impl Target {
    /// What its tokens are for, as the cache key covers it: the resource, and the indicators if
    /// any (none: the resource alone, as keys have always been made).
    pub fn key_resource(&self) -> std::borrow::Cow<'_, str> {
        if self.indicators.is_empty() {
            return self.resource.as_str().into();
        }
        let mut text = self.resource.clone();
        for indicator in &self.indicators {
            text.push('\0');
            text.push_str(indicator);
        }
        text.into()
    }
}

/// An exact name, or `*.suffix` for any subdomain (never the bare suffix); an authority matches
/// only with the same port, or none, as Envoy's virtual-host domains match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: HostName,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    /// Lowercase.
    Exact(String),
    /// The suffix with its leading dot, lowercase: `.example.com`.
    AnySubdomainOf(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let lower = raw.to_ascii_lowercase();
        let (rest, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        if rest.is_empty() || rest.starts_with(':') {
            return Err("must name a host, such as api.example.com or *.example.com".into());
        }
        let Some(Authority { host, port }) = authority::parse(rest) else {
            return Err(format!(
                "'{raw}' is not a host name with an optional port: no scheme, path, spaces or \
                 trailing dot, '*' only as a leading '*.', a port from 1 to 65535"
            ));
        };
        let name = if wildcard {
            if host.starts_with('[') || host.split('.').count() < 2 {
                return Err(format!(
                    "'{raw}' needs at least two labels after '*.', such as *.example.com"
                ));
            }
            HostName::AnySubdomainOf(format!(".{host}"))
        } else {
            HostName::Exact(host.to_string())
        };
        Ok(HostPattern { name, port })
    }

    fn matches(&self, authority: &Authority<'_>) -> bool {
        self.port == authority.port && self.matches_name(authority.host)
    }

    /// An authority it matches, to ask which of Envoy's virtual hosts it would reach.
    pub fn example(&self) -> String {
        let name = match &self.name {
            HostName::Exact(name) => name.clone(),
            HostName::AnySubdomainOf(suffix) => format!("x{suffix}"),
        };
        match self.port {
            Some(port) => format!("{name}:{port}"),
            None => name,
        }
    }

    fn matches_name(&self, host: &str) -> bool {
        // The pattern is lowercase, and so is almost every request's host: comparing the bytes
        // first costs a fraction of comparing each byte's lowercase.
        let same = |host: &[u8], name: &[u8]| host == name || host.eq_ignore_ascii_case(name);
        match &self.name {
            HostName::Exact(name) => same(host.as_bytes(), name.as_bytes()),
            HostName::AnySubdomainOf(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len() && same(&host[host.len() - suffix.len()..], suffix)
            }
        }
    }
}

/// The route's cluster name, exactly, where each `*` stands for a non-empty run without `|`
/// (Istio's `outbound|80||*.payments.svc.cluster.local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPattern(String);

/// More would make matching a name slow; no cluster naming scheme needs them.
const MAX_CLUSTER_WILDCARDS: usize = 4;

impl ClusterPattern {
    pub fn parse(raw: &str) -> Result<ClusterPattern, String> {
        if raw.is_empty() {
            return Err(
                "must name a cluster, such as outbound|80||orders.shop.svc.cluster.local".into(),
            );
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        if raw.len() > 512 {
            return Err("must be at most 512 characters".into());
        }
        if raw.matches('*').count() > MAX_CLUSTER_WILDCARDS {
            return Err(format!(
                "may have at most {MAX_CLUSTER_WILDCARDS} '*' wildcards"
            ));
        }
        Ok(ClusterPattern(raw.to_string()))
    }

    pub fn matches(&self, cluster: &str) -> bool {
        glob(self.0.as_bytes(), cluster.as_bytes())
    }
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            let run = name.iter().take_while(|&&b| b != b'|').count();
            (1..=run).any(|taken| glob(rest, &name[taken..]))
        }
        Some((byte, rest)) => name.first() == Some(byte) && glob(rest, &name[1..]),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RequestRoute<'a> {
    pub authority: &'a str,
    pub path: &'a str,
    /// `xds.cluster_name`; None without a route, or if no target names a cluster.
    pub cluster: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match<'a> {
    /// The first target that holds, and its index.
    Target(usize, &'a Target),
    Unmatched,
    /// The authority is not `host[:port]`, and read leniently it names a target's host: Envoy
    /// routes it by its whole value, so it is refused rather than matched.
    MalformedAuthority,
    /// A `path_prefix` target would consider a path that the router or upstream may read otherwise.
    AmbiguousPath,
}

/// `paths_normalized`: Envoy normalizes paths first, so an ambiguous path cannot reach the filter.
pub fn find_target<'a>(
    targets: &'a [Target],
    request: &RequestRoute<'_>,
    paths_normalized: bool,
) -> Match<'a> {
    let authority = authority::parse(request.authority);
    // Past the last target with a path prefix, the first match is final.
    let last_with_prefix = targets.iter().rposition(|t| t.path_prefix.is_some());
    let mut found = None;
    let mut prefix_considers = false;
    for (index, target) in targets.iter().enumerate() {
        let host_holds = target
            .host
            .as_ref()
            .is_none_or(|host| authority.is_some_and(|a| host.matches(&a)));
        if !host_holds || !cluster_holds(target, request.cluster) {
            continue;
        }
        match &target.path_prefix {
            None => {
                found = found.or(Some(index));
            }
            Some(prefix) => {
                prefix_considers = true;
                if found.is_none() && request.path.starts_with(prefix.as_str()) {
                    found = Some(index);
                }
            }
        }
        if found.is_some() && last_with_prefix.is_none_or(|last| index >= last) {
            break;
        }
    }
    if prefix_considers && !paths_normalized && request_path::is_ambiguous(request.path) {
        return Match::AmbiguousPath;
    }
    if let Some(index) = found {
        return Match::Target(index, &targets[index]);
    }
    if authority.is_none() && aimed_at_a_target(targets, request) {
        return Match::MalformedAuthority;
    }
    Match::Unmatched
}

fn cluster_holds(target: &Target, cluster: Option<&str>) -> bool {
    target
        .cluster
        .as_ref()
        .is_none_or(|pattern| cluster.is_some_and(|c| pattern.matches(c)))
}

/// Whether a malformed authority, read leniently, names a target's host.
fn aimed_at_a_target(targets: &[Target], request: &RequestRoute<'_>) -> bool {
    authority::lenient_hosts(request.authority).any(|host| {
        targets.iter().any(|target| {
            target
                .host
                .as_ref()
                .is_some_and(|pattern| pattern.matches_name(&host))
                && cluster_holds(target, request.cluster)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        host: Option<&str>,
        cluster: Option<&str>,
        prefix: Option<&str>,
        scope: &str,
    ) -> Target {
        Target {
            indicators: Vec::new(),
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            cluster: cluster.map(|c| ClusterPattern::parse(c).unwrap()),
            path_prefix: prefix.map(str::to_string),
            provider: 0,
            resource: scope.to_string(),
        }
    }

    fn host(h: &str, prefix: Option<&str>, scope: &str) -> Target {
        target(Some(h), None, prefix, scope)
    }

    fn route<'a>(authority: &'a str, path: &'a str, cluster: Option<&'a str>) -> RequestRoute<'a> {
        RequestRoute {
            authority,
            path,
            cluster,
        }
    }

    /// The scope picked, or what else the request is.
    fn outcome(targets: &[Target], authority: &str, path: &str, cluster: Option<&str>) -> String {
        match find_target(targets, &route(authority, path, cluster), false) {
            Match::Target(_, t) => t.resource.clone(),
            other => format!("{other:?}"),
        }
    }

    fn scope_for(targets: &[Target], authority: &str, path: &str) -> String {
        outcome(targets, authority, path, None)
    }

    #[test]
    fn exact_host_matches_case_insensitively_and_only_without_a_port() {
        let t = [host("API.example.com", None, "s")];
        assert_eq!(scope_for(&t, "api.example.com", "/"), "s");
        assert_eq!(scope_for(&t, "Api.Example.COM", "/x"), "s");
        assert_eq!(scope_for(&t, "api.example.com:8443", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "api.example.com:80", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "other.example.com", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "xapi.example.com", "/"), "Unmatched");
    }

    #[test]
    fn a_host_with_a_port_matches_that_port_only() {
        let t = [host("api.example.com:8080", None, "s")];
        assert_eq!(scope_for(&t, "api.example.com:8080", "/"), "s");
        assert_eq!(scope_for(&t, "api.example.com", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "api.example.com:80", "/"), "Unmatched");
    }

    #[test]
    fn a_malformed_authority_aimed_at_a_target_is_refused_and_never_matched() {
        let t = [
            host("api.example.com", None, "api"),
            host("*.team.local", None, "team"),
        ];
        for aimed in [
            "api.example.com.",
            "api.example.com..",
            "api.example.com.:80",
            "api.example.com:",
            "api.example.com:0x50",
            "api.example.com:080",
            "user@api.example.com",
            "api.example.com@",
            "api.example.com%2e",
            "%61pi.example.com",
            "api.example.com;x",
            "[api.example.com]",
            "api.example.com,evil.example.org",
            "evil.example.org,api.example.com",
            "x.team.local.",
        ] {
            assert_eq!(scope_for(&t, aimed, "/"), "MalformedAuthority", "{aimed:?}");
        }
        // Malformed, but aimed elsewhere: just unmatched.
        assert_eq!(scope_for(&t, "other.example.org.", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "", "/"), "Unmatched");
    }

    #[test]
    fn wildcard_matches_any_subdomain_but_never_the_bare_domain() {
        let t = [host("*.team.svc.cluster.local", None, "s")];
        assert_eq!(scope_for(&t, "api.team.svc.cluster.local", "/"), "s");
        assert_eq!(scope_for(&t, "a.b.team.svc.cluster.local", "/"), "s");
        assert_eq!(scope_for(&t, "team.svc.cluster.local", "/"), "Unmatched");
        assert_eq!(
            scope_for(&t, "evilteam.svc.cluster.local", "/"),
            "Unmatched"
        );
        assert_eq!(
            scope_for(&t, "a.team.svc.cluster.local:80", "/"),
            "Unmatched"
        );
    }

    #[test]
    fn a_wildcard_needs_two_labels_after_it() {
        assert!(HostPattern::parse("*.com").is_err());
        assert!(HostPattern::parse("*.localhost:8080").is_err());
        assert!(HostPattern::parse("*.example.com").is_ok());
        assert!(HostPattern::parse("*.example.com:8080").is_ok());
        for bad in [
            "*",
            "*.",
            "",
            ":80",
            "api.example.com.",
            "http://api",
            "a/b",
            "*.*.com",
            "a*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_prefix_narrows_a_target() {
        let t = [
            host("api.example.com", Some("/v2/"), "v2"),
            host("api.example.com", None, "any"),
        ];
        assert_eq!(scope_for(&t, "api.example.com", "/v2/users"), "v2");
        assert_eq!(scope_for(&t, "api.example.com", "/v1/users"), "any");
        assert_eq!(scope_for(&t, "api.example.com", "/V2/users"), "any");
    }

    #[test]
    fn an_ambiguous_path_is_refused_where_a_prefix_target_would_consider_it() {
        let t = [
            host("api.example.com", None, "any"),
            host("api.example.com", Some("/admin/"), "admin"),
            host("other.example.com", None, "other"),
        ];
        for path in [
            "/user/../admin/x",
            "/admin/%2e%2e/x",
            "//admin/x",
            "/%61dmin/x",
        ] {
            assert_eq!(
                scope_for(&t, "api.example.com", path),
                "AmbiguousPath",
                "{path}"
            );
        }
        // No prefix target holds for this host: nothing to disagree about.
        assert_eq!(
            scope_for(&t, "other.example.com", "/user/../admin/x"),
            "other"
        );
        // Envoy normalizes before the filter: the path is taken as it is.
        let normalized = find_target(
            &t,
            &route("api.example.com", "/user/../admin/x", None),
            true,
        );
        assert!(matches!(normalized, Match::Target(0, _)));
    }

    #[test]
    fn first_matching_target_wins() {
        let t = [
            host("*.example.com", None, "first"),
            host("api.example.com", None, "second"),
        ];
        assert_eq!(scope_for(&t, "api.example.com", "/"), "first");
    }

    #[test]
    fn ipv6_authority_keeps_its_brackets() {
        let t = [
            host("[::1]", None, "v6"),
            host("[::1]:8080", None, "v6-8080"),
        ];
        assert_eq!(scope_for(&t, "[::1]", "/"), "v6");
        assert_eq!(scope_for(&t, "[::1]:8080", "/"), "v6-8080");
    }

    #[test]
    fn non_ascii_authority_never_panics_or_matches() {
        let t = [host("*.example.com", None, "s")];
        assert_eq!(scope_for(&t, "é.example.co", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "ééééééééééééé", "/"), "Unmatched");
        assert_eq!(scope_for(&t, "é.example.com", "/"), "MalformedAuthority");
    }

    #[test]
    fn a_cluster_target_matches_the_cluster_envoy_picked_whatever_the_authority() {
        let t = [target(
            None,
            Some("outbound|80||orders.shop.svc.cluster.local"),
            None,
            "orders",
        )];
        let cluster = Some("outbound|80||orders.shop.svc.cluster.local");
        for authority in [
            "orders",
            "orders.shop",
            "orders.shop.svc:80",
            "10.0.0.7",
            "x..y",
        ] {
            assert_eq!(
                outcome(&t, authority, "/", cluster),
                "orders",
                "{authority}"
            );
        }
        assert_eq!(
            outcome(
                &t,
                "orders",
                "/",
                Some("outbound|80||other.shop.svc.cluster.local")
            ),
            "Unmatched"
        );
        assert_eq!(outcome(&t, "orders", "/", None), "Unmatched");
    }

    #[test]
    fn host_and_cluster_must_both_hold() {
        let t = [target(Some("api.example.com"), Some("api"), None, "api")];
        assert_eq!(outcome(&t, "api.example.com", "/", Some("api")), "api");
        assert_eq!(
            outcome(&t, "api.example.com", "/", Some("partner")),
            "Unmatched"
        );
        assert_eq!(
            outcome(&t, "evil.example.org", "/", Some("api")),
            "Unmatched"
        );
        assert_eq!(
            outcome(&t, "api.example.com.", "/", Some("api")),
            "MalformedAuthority"
        );
        // Aimed at the host, but routed to a cluster the target does not name.
        assert_eq!(
            outcome(&t, "api.example.com.", "/", Some("other")),
            "Unmatched"
        );
    }

    #[test]
    fn a_cluster_wildcard_is_a_non_empty_run_without_a_bar() {
        let p = ClusterPattern::parse("outbound|*||*.payments.svc.cluster.local").unwrap();
        assert!(p.matches("outbound|80||api.payments.svc.cluster.local"));
        assert!(p.matches("outbound|8080||a.b.payments.svc.cluster.local"));
        assert!(!p.matches("outbound|||api.payments.svc.cluster.local"));
        assert!(!p.matches("outbound|80|v1|api.payments.svc.cluster.local"));
        assert!(!p.matches("outbound|80||payments.svc.cluster.local"));
        assert!(!p.matches("outbound|80||x|y.payments.svc.cluster.local"));
        assert!(!p.matches("outbound|80||api.payments.svc.cluster.local.evil"));
        let exact = ClusterPattern::parse("api").unwrap();
        assert!(exact.matches("api"));
        assert!(!exact.matches("api2"));
        assert!(!exact.matches("Api"));
    }

    #[test]
    fn cluster_patterns_are_checked() {
        for bad in ["", "a b", "a\nb", "*|*|*|*|*"] {
            assert!(ClusterPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ClusterPattern::parse("*").is_ok());
    }
}
