//! `:authority` read strictly, as Envoy's virtual hosts match the whole value (docs/routing.md).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// As the request wrote it (any case); an IPv6 literal keeps its brackets.
    pub host: &'a str,
    pub port: Option<u16>,
}

/// None unless `host[:port]`: letters, digits, `-`, `_` and dots between non-empty labels, or an
/// IPv6 literal in brackets; a port from 1 to 65535 without a leading zero.
pub fn parse(authority: &str) -> Option<Authority<'_>> {
    let (host, port) = split_port(authority)?;
    if !is_host(host) {
        return None;
    }
    let port = match port {
        None => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Some(Authority { host, port })
}

/// The hosts a lenient reader could take from `authority` (each `,`-joined value, decoded, without
/// user info, port, parameters or trailing dots): was a malformed authority aimed at a target?
pub fn lenient_hosts(authority: &str) -> impl Iterator<Item = String> + '_ {
    authority.split(',').map(|value| {
        let decoded = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        let after_user = decoded
            .rsplit('@')
            .find(|piece| !piece.is_empty())
            .unwrap_or("");
        let host = match after_user.strip_prefix('[') {
            Some(inner) if inner.contains(':') => inner
                .find(']')
                .map_or(after_user, |end| &after_user[..end + 2]),
            Some(inner) => inner.split(']').next().unwrap_or(inner),
            None => after_user,
        };
        let host = host.split([';', ' ', '\t']).next().unwrap_or(host);
        let host = match host.starts_with('[') {
            true => host,
            false => host.split(':').next().unwrap_or(host),
        };
        host.trim_end_matches('.').to_string()
    })
}

/// `host` and the text after its port colon, if any. An IPv6 literal's colons are inside its
/// brackets; after the closing bracket only `:port` may follow.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        };
    }
    // A plain loop: an authority is short, shorter than `memchr` is quick to set up for.
    Some(match authority.bytes().position(|b| b == b':') {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
        None => (authority, None),
    })
}

fn parse_port(digits: &str) -> Option<u16> {
    let plain = (1..=5).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    plain.then(|| digits.parse().ok()).flatten()
}

pub fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    // One pass, as every request's authority goes through it: no label empty, the last included.
    let mut label = 0usize;
    for b in host.bytes() {
        match HOST_BYTES[usize::from(b)] {
            LABEL => label += 1,
            DOT if label > 0 => label = 0,
            _ => return false,
        }
    }
    label > 0
}

const OTHER: u8 = 0;
const LABEL: u8 = 1;
const DOT: u8 = 2;

/// What each byte may be in a host name: one lookup a byte instead of five ranges.
static HOST_BYTES: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            table[b] = LABEL;
        }
        b += 1;
    }
    table[b'.' as usize] = DOT;
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(host: &str, port: Option<u16>) -> Option<Authority<'_>> {
        Some(Authority { host, port })
    }

    #[test]
    fn a_host_with_or_without_a_port_is_read() {
        assert_eq!(parse("api.example.com"), plain("api.example.com", None));
        assert_eq!(
            parse("API.example.com:8443"),
            plain("API.example.com", Some(8443))
        );
        assert_eq!(parse("orders"), plain("orders", None));
        assert_eq!(parse("10.0.0.7:80"), plain("10.0.0.7", Some(80)));
        assert_eq!(parse("[::1]"), plain("[::1]", None));
        assert_eq!(parse("[::1]:65535"), plain("[::1]", Some(65535)));
    }

    #[test]
    fn what_envoy_would_route_elsewhere_is_not_a_plain_authority() {
        for bad in [
            "",
            "api.example.com.",
            "api.example.com..",
            ".api.example.com",
            "api..example.com",
            "api.example.com:",
            "api.example.com:0x50",
            "api.example.com:0",
            "api.example.com:080",
            "api.example.com:65536",
            "api.example.com:123456",
            "api.example.com:80:80",
            "api.example.com.:80",
            "user@api.example.com",
            "api.example.com@evil.example.org",
            "api.example.com%2e",
            "api.example.com/x",
            "api example.com",
            "é.example.com",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[]",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_lenient_hosts_are_what_a_malformed_authority_was_aimed_at() {
        let hosts = |a: &str| lenient_hosts(a).collect::<Vec<_>>();
        for aimed in [
            "API.example.com.",
            "api.example.com..:80",
            "api.example.com:0x50",
            "user:pw@api.example.com:",
            "api.example.com@",
            "api.example.com%2e",
            "%61pi.example.com",
            "api.example.com;x",
            "[api.example.com]",
            "api.example.com\t",
        ] {
            assert_eq!(hosts(aimed), ["api.example.com"], "{aimed:?}");
        }
        assert_eq!(
            hosts("api.example.com,evil.example.org"),
            ["api.example.com", "evil.example.org"]
        );
        assert_eq!(hosts("[::1]:x"), ["[::1]"]);
        assert_eq!(hosts("%"), ["%"]);
        assert_eq!(hosts("%zz%e2%82"), ["%zz\u{fffd}"]);
    }
}
