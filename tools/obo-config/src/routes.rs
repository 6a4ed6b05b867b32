//! Routes that could carry a target's token somewhere else after the filter let the request go:
//! Envoy follows an upstream's redirect (`internal_redirect_policy`) or sends a copy of the request
//! to another cluster (`request_mirror_policies`) with the `Authorization` the filter wrote.

use obo_core::assertion_source::{AssertionSource, SourceFormat};
use obo_core::config::{ClientAuth, Config, ConfigError, Provider};
use obo_core::target_match::Target;
use serde_json::Value;

/// One line for each route (or virtual host) of `route_config` that leads to a target and moves
/// or copies requests.
pub fn warnings(config: &Config, route_config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let hosts = route_config["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten();
    for (v, vhost) in hosts.enumerate() {
        let domains: Vec<&str> = vhost["domains"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let vhost_mirrors = has_items(&vhost["request_mirror_policies"]);
        let routes = vhost["routes"].as_array().into_iter().flatten();
        for (r, route) in routes.enumerate() {
            let action = &route["route"];
            if !action.is_object() {
                continue;
            }
            let Some(target) = config
                .targets
                .iter()
                .position(|t| could_take(t, &domains, &clusters_of(action)))
            else {
                continue;
            };
            let at = format!("route_config.virtual_hosts[{v}].routes[{r}] (targets[{target}])");
            if action.get("internal_redirect_policy").is_some() {
                out.push(format!(
                    "{at}: internal_redirect_policy: Envoy follows an upstream's redirect with \
                     the target's token to wherever it points; a target's route must not follow \
                     redirects"
                ));
            }
            if has_items(&action["request_mirror_policies"]) || vhost_mirrors {
                out.push(format!(
                    "{at}: request_mirror_policies: Envoy sends a copy of each request, the \
                     target's token included, to the mirror cluster; a target's route must not \
                     mirror"
                ));
            }
        }
    }
    out
}

/// One line for each static cluster a `cluster` target names whose endpoint the request itself
/// can choose: an original-destination cluster (the address the application connected to, or with
/// `use_http_header` a request header) or a dynamic forward proxy (the request's host).
pub fn cluster_warnings(config: &Config, clusters: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (c, cluster) in clusters.as_array().into_iter().flatten().enumerate() {
        let Some(name) = cluster["name"].as_str() else {
            continue;
        };
        let picks_its_own = cluster["type"] == "ORIGINAL_DST"
            || cluster["cluster_type"]["name"] == "envoy.clusters.dynamic_forward_proxy";
        if !picks_its_own {
            continue;
        }
        let named = config
            .targets
            .iter()
            .position(|t| t.cluster.as_ref().is_some_and(|p| p.matches(name)));
        if let Some(target) = named {
            out.push(format!(
                "static_resources.clusters[{c}] ({name}, targets[{target}]): the request chooses \
                 where this cluster sends it (original destination or dynamic forward proxy), so \
                 a cluster target does not limit where its token goes; add a host, or name a \
                 cluster with fixed endpoints"
            ));
        }
    }
    out
}

/// Each provider whose `token_cluster` is not among `clusters` (the configuration's whole list):
/// its token requests could not be sent. Also a warning, as a problem, for each cluster target
/// that matches none of them.
pub fn missing_clusters(config: &Config, clusters: &Value) -> Vec<ConfigError> {
    let names: Vec<&str> = clusters
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut out = Vec::new();
    for provider in &config.providers {
        if !names.contains(&provider.token_cluster.as_str()) {
            out.push(ConfigError {
                field: provider_field(provider, "token_cluster"),
                problem: format!(
                    "names no cluster of this Envoy configuration (it has {}): token requests \
                     could not be sent",
                    names.join(", ")
                ),
            });
        }
    }
    for (provider, source) in fetched_sources(config) {
        if !names.contains(&source.cluster.as_str()) {
            out.push(ConfigError {
                field: provider_field(provider, "client_assertion_source.cluster"),
                problem: format!(
                    "{} is not a cluster of this Envoy configuration (it has {}): the client \
                     assertion could not be fetched",
                    source.cluster,
                    names.join(", ")
                ),
            });
        }
    }
    for (i, target) in config.targets.iter().enumerate() {
        if let Some(pattern) = &target.cluster {
            if !names.iter().any(|name| pattern.matches(name)) {
                out.push(ConfigError {
                    field: format!("targets[{i}].cluster"),
                    problem: "matches no cluster of this Envoy configuration: the target can \
                              never match"
                        .into(),
                });
            }
        }
    }
    out
}

/// One line for each assertion source served as a file (format `text`) that a listener with an
/// address reaches: a route or proxy of that listener sends to the source's cluster, or the
/// cluster's endpoint is that listener's own port. Whatever can connect there reads the token and
/// can act as the application at the identity provider; an internal listener has no address.
pub fn source_warnings(config: &Config, clusters: &Value, listeners: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let listeners: Vec<&Value> = listeners.as_array().into_iter().flatten().collect();
    for (provider, source) in fetched_sources(config) {
        if source.format != SourceFormat::Text {
            continue;
        }
        let field = provider_field(provider, "client_assertion_source.cluster");
        let served_on = |l: &&Value| {
            let Some(address) = l["address"]["socket_address"].as_object() else {
                return false;
            };
            let port = &address["port_value"];
            let endpoints = clusters
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["name"] == source.cluster.as_str())
                .flat_map(|c| socket_addresses(&c["load_assignment"]));
            endpoints
                .into_iter()
                .any(|a| !port.is_null() && a["port_value"] == *port)
                || sends_to(l, &source.cluster)
        };
        for (i, listener) in listeners.iter().enumerate() {
            if served_on(listener) {
                let name = listener["name"].as_str().unwrap_or("unnamed");
                let port = &listener["address"]["socket_address"]["port_value"];
                out.push(format!(
                    "{field}: {} is reachable from static_resources.listeners[{i}] ({name}, port \
                     {port}): any process that can connect there (the application's included) \
                     reads the assertion and can act as the application; serve it on an internal \
                     listener (envoy_internal_address) that no listener with an address routes to",
                    source.cluster
                ));
            }
        }
    }
    out
}

/// Each provider that fetches its client assertion, with where it fetches it.
fn fetched_sources(config: &Config) -> impl Iterator<Item = (&Provider, &AssertionSource)> {
    config
        .providers
        .iter()
        .filter_map(|p| match &p.client_auth {
            ClientAuth::Fetched(source) => Some((p, source.as_ref())),
            _ => None,
        })
}

fn provider_field(provider: &Provider, field: &str) -> String {
    match provider.name.as_str() {
        "default" => field.to_string(),
        name => format!("providers.{name}.{field}"),
    }
}

/// The socket addresses of a cluster's `load_assignment`.
fn socket_addresses(load_assignment: &Value) -> Vec<&Value> {
    let endpoints = load_assignment["endpoints"]
        .as_array()
        .into_iter()
        .flatten();
    endpoints
        .flat_map(|e| e["lb_endpoints"].as_array().into_iter().flatten())
        .map(|e| &e["endpoint"]["address"]["socket_address"])
        .filter(|a| a.is_object())
        .collect()
}

/// Whether anything in `value` (a listener) names `cluster` as where it sends: a route's or a TCP
/// proxy's `cluster`, a weighted cluster's `name`.
fn sends_to(value: &Value, cluster: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, item)| {
            (key == "cluster" && item == cluster)
                || (key == "weighted_clusters"
                    && item["clusters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["name"] == cluster))
                || sends_to(item, cluster)
        }),
        Value::Array(items) => items.iter().any(|item| sends_to(item, cluster)),
        _ => false,
    }
}

fn has_items(value: &Value) -> bool {
    value.as_array().is_some_and(|items| !items.is_empty())
}

/// The clusters a route action sends to; None when a header names it (any cluster).
fn clusters_of(action: &Value) -> Option<Vec<&str>> {
    if action.get("cluster_header").is_some() || action.get("cluster_specifier_plugin").is_some() {
        return None;
    }
    let mut names: Vec<&str> = action["cluster"].as_str().into_iter().collect();
    let weighted = action["weighted_clusters"]["clusters"].as_array();
    names.extend(
        weighted
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str()),
    );
    Some(names)
}

/// Whether a request for `target` could be routed by a virtual host with these domains to one of
/// these clusters.
fn could_take(target: &Target, domains: &[&str], clusters: &Option<Vec<&str>>) -> bool {
    let host_holds = target.host.as_ref().is_none_or(|host| {
        let example = host.example();
        domains.iter().any(|d| domain_matches(d, &example))
    });
    let cluster_holds = target
        .cluster
        .as_ref()
        .is_none_or(|pattern| match clusters {
            Some(names) => names.iter().any(|name| pattern.matches(name)),
            None => true,
        });
    host_holds && cluster_holds
}

/// Envoy's virtual-host domain matching: exact, `*`, `*suffix` and `prefix*`, ignoring case.
fn domain_matches(domain: &str, authority: &str) -> bool {
    let (domain, authority) = (domain.to_ascii_lowercase(), authority.to_ascii_lowercase());
    if domain == "*" {
        true
    } else if let Some(suffix) = domain.strip_prefix('*') {
        authority.len() > suffix.len() && authority.ends_with(suffix)
    } else if let Some(prefix) = domain.strip_suffix('*') {
        authority.len() > prefix.len() && authority.starts_with(prefix)
    } else {
        domain == authority
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(targets: Value) -> Config {
        let cfg = json!({
            "token_cluster": "entra_id",
            "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
            "client_id": "id",
            "client_secret": "secret",
            "targets": targets
        });
        obo_core::config::parse(cfg.to_string().as_bytes(), &|_| None).unwrap()
    }

    fn routes(action_api: Value, action_other: Value) -> Value {
        json!({"virtual_hosts": [
            {"name": "api", "domains": ["api.example.com", "api.example.com:80"],
             "routes": [{"match": {"prefix": "/"}, "route": action_api}]},
            {"name": "rest", "domains": ["*.other.example"],
             "routes": [{"match": {"prefix": "/"}, "route": action_other}]}
        ]})
    }

    #[test]
    fn redirects_and_mirrors_on_a_targets_route_are_named() {
        let cfg = config(json!([{"host": "api.example.com", "scope": "s"}]));
        let warnings = warnings(
            &cfg,
            &routes(
                json!({"cluster": "api", "internal_redirect_policy": {},
                       "request_mirror_policies": [{"cluster": "shadow"}]}),
                json!({"cluster": "other", "internal_redirect_policy": {}}),
            ),
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "route_config.virtual_hosts[0].routes[0] (targets[0]): internal_redirect_policy"
        ));
        assert!(warnings[1].contains("request_mirror_policies"));
    }

    #[test]
    fn a_delegating_providers_actor_needs_its_own_token_cluster_too() {
        let cfg = json!({
            "token_cluster": "sts", "token_endpoint": "https://sts.example/token",
            "client_id": "agent-app", "client_secret": "secret", "grant": "token_exchange",
            "actor": {"provider": "agent", "scope": "api://sts/.default"},
            "providers": {"agent": {
                "token_cluster": "entra_id", "grant": "client_credentials",
                "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
                "client_id": "agent-identity", "client_secret": "secret"}},
            "targets": [{"host": "mcp.example.com", "audience": "https://mcp.example.com/"}]
        });
        let cfg = obo_core::config::parse(cfg.to_string().as_bytes(), &|_| None).unwrap();
        let missing = missing_clusters(&cfg, &json!([{"name": "sts"}]));
        let fields: Vec<&str> = missing.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["providers.agent.token_cluster"]);
    }

    #[test]
    fn a_cluster_target_is_found_by_the_clusters_a_route_sends_to() {
        let cfg = config(json!([{"cluster": "other", "scope": "s"}]));
        let weighted = json!({"weighted_clusters": {"clusters": [{"name": "a", "weight": 1},
                                                                {"name": "other", "weight": 1}]},
                              "internal_redirect_policy": {}});
        let warnings = warnings(
            &cfg,
            &routes(
                json!({"cluster": "api", "internal_redirect_policy": {}}),
                weighted,
            ),
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("route_config.virtual_hosts[1].routes[0]"));
    }

    #[test]
    fn routes_that_lead_to_no_target_or_move_nothing_are_left_alone() {
        let cfg = config(json!([{"host": "*.team.local", "scope": "s"}]));
        let quiet = routes(
            json!({"cluster": "api", "internal_redirect_policy": {}}),
            json!({"cluster": "other", "request_mirror_policies": []}),
        );
        assert!(warnings(&cfg, &quiet).is_empty());
        let cfg = config(json!([{"host": "x.other.example", "scope": "s"}]));
        assert!(warnings(&cfg, &quiet).is_empty());
        assert_eq!(
            warnings(
                &cfg,
                &routes(
                    json!({"cluster": "api"}),
                    json!({"cluster": "other", "internal_redirect_policy": {}})
                )
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_cluster_target_on_a_cluster_the_request_steers_is_named() {
        let cfg =
            config(json!([{"cluster": "outbound|*||*.shop.svc.cluster.local", "scope": "s"}]));
        let clusters = json!([
            {"name": "outbound|80||orders.shop.svc.cluster.local", "type": "STATIC"},
            {"name": "outbound|80||db.shop.svc.cluster.local", "type": "ORIGINAL_DST"},
            {"name": "egress", "cluster_type": {"name": "envoy.clusters.dynamic_forward_proxy"}},
            {"name": "outbound|80||web.shop.svc.cluster.local",
             "cluster_type": {"name": "envoy.clusters.dynamic_forward_proxy"}}
        ]);
        let warnings = cluster_warnings(&cfg, &clusters);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("static_resources.clusters[1] (outbound|80||db"));
        assert!(warnings[1].starts_with("static_resources.clusters[3] (outbound|80||web"));
    }

    #[test]
    fn envoys_domain_wildcards_are_matched_as_envoy_matches_them() {
        assert!(domain_matches("*", "api.example.com"));
        assert!(domain_matches("*.example.com", "API.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(domain_matches("api.*", "api.example.com"));
        assert!(!domain_matches("api.example.com", "api.example.com:80"));
    }
}
