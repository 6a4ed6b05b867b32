//! Whether a request's `:path` means the same to a plain prefix comparison as to Envoy's router and
//! the upstream after it: `/v2/../admin/x` starts with `/v2/` but is `/admin/x` to a server.

/// True if a normalizer or some server would change the path (before `?`): routing.md, "Paths".
pub fn is_ambiguous(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    if path.contains('#') || path.contains('\\') {
        return true;
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(decoded) = bytes.get(i + 1..i + 3).and_then(hex_pair) else {
                return true;
            };
            if decodes_to_trouble(decoded) {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // The first piece is what precedes the leading `/` (empty for an origin-form path).
    let segments = path.split('/').count().saturating_sub(1);
    path.split('/').skip(1).enumerate().any(|(n, segment)| {
        let name = segment
            .split_once(';')
            .map_or(segment, |(name, _params)| name);
        // Only the last segment may be empty: `/v2/` is a directory, `/v2//x` is not.
        (segment.is_empty() && n + 1 != segments) || name == "." || name == ".."
    })
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// Whether a percent-encoded byte may turn into path structure once some server decodes it.
fn decodes_to_trouble(b: u8) -> bool {
    // RFC 3986 unreserved characters: their encoded form means the character itself.
    let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    unreserved || matches!(b, b'/' | b'\\' | b';' | b'%' | 0xc0 | 0xc1) || b.is_ascii_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_not_ambiguous() {
        for path in [
            "/",
            "/v2/",
            "/v2/users",
            "/v2/users/42?expand=true",
            "/v2/a%20b",
            "/v2/%E2%82%AC",
            "/v2/file.json",
            "/v2/..x/.y",
            "/v2/x?next=/../admin//x%2f",
            "*",
        ] {
            assert!(!is_ambiguous(path), "{path:?}");
        }
    }

    #[test]
    fn what_a_normalizer_would_change_is_ambiguous() {
        for path in [
            "/v2/../v1/x",
            "/v2/./x",
            "/v2/..",
            "/..",
            "/v2/%2e%2e/v1/x",
            "/v2/.%2E/v1/x",
            "/v2/%2E/x",
            "/v2/..;/admin",
            "/v2/.;x/y",
            "//v2/x",
            "/v2//x",
            "/v2/x%2F..%2Fadmin",
            "/v2/x%5c..",
            "/v2\\..\\admin",
            "/%762/x",
            "/v2/%41",
            "/v2/%7e",
            "/v2/%zz",
            "/v2/%4",
            "/v2/%",
            "/v2/x#frag",
            "/v2/..%3B/admin",
            "/v2/%252e%252e/admin",
            "/v2/%c0%ae%c0%ae/admin",
            "/v2/..%09/admin",
            "/v2/x%00",
            "/v2/x%7f",
        ] {
            assert!(is_ambiguous(path), "{path:?}");
        }
    }
}
