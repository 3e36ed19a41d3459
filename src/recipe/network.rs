//! `[build] network`: what a build may reach. `false` (the default): nothing, not even a
//! proxy; `true`: any public host; `["static.rust-lang.org", "*.example.org"]`: those
//! hosts only. Whatever it says, a networked build reaches the outside only through packager's
//! egress proxy ([`crate::egress`]), which never connects to loopback, link-local, private or
//! the host's own addresses.

use serde::Serialize;

/// What a build may reach through the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// No network at all (`network = false`).
    #[default]
    Off,
    /// Any public host (`network = true`).
    Any,
    /// Only these hosts (`network = ["host", "*.domain"]`), in the recipe's order.
    Hosts(Vec<HostPattern>),
}

impl Network {
    /// Whether the build gets a network (through the proxy) at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, Network::Off)
    }

    /// Whether a request to `host` (a name or an address, lower case, no trailing dot) passes
    /// the recipe's list. Addresses are checked separately, whatever this says.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            Network::Off => false,
            Network::Any => true,
            Network::Hosts(hosts) => hosts.iter().any(|h| h.matches(host)),
        }
    }
}

/// The canonical TOML: `false`, `true`, or the list.
impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::Off => s.serialize_bool(false),
            Network::Any => s.serialize_bool(true),
            Network::Hosts(hosts) => s.collect_seq(hosts.iter().map(HostPattern::as_str)),
        }
    }
}

/// One entry of a `network` list: a host name (`static.rust-lang.org`), a wildcard for the
/// names under a domain (`*.example.org`: `a.example.org`, `a.b.example.org`, not
/// `example.org`), or an IP address. Stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    /// Parses an entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty `network` entry: name a host (`static.rust-lang.org`)".into());
        }
        if t.contains("://") || t.contains('/') {
            return Err(format!(
                "`{t}` is a URL or a path: a `network` entry names a host only (`static.rust-lang.org`)"
            ));
        }
        let lower = t.to_ascii_lowercase();
        if lower.parse::<std::net::IpAddr>().is_ok() {
            return Ok(HostPattern(lower));
        }
        if t.contains(':') {
            return Err(format!(
                "`{t}` has a port: a `network` entry names a host only, every port of it is allowed"
            ));
        }
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let name = name.strip_suffix('.').unwrap_or(name);
        let labels_ok = name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return Err(format!(
                "`{t}` is not a host name (letters, digits, `-` and dots; `*.` may start it)"
            ));
        }
        let prefix = if lower.starts_with("*.") { "*." } else { "" };
        Ok(HostPattern(format!("{prefix}{name}")))
    }

    /// The entry as written (lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `host` (lower case, no trailing dot) is this entry.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.0 == host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_host_names_wildcards_or_addresses() {
        for ok in [
            "static.rust-lang.org",
            "Example.ORG.",
            "*.example.org",
            "10.0.0.1",
            "::1",
        ] {
            HostPattern::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            HostPattern::parse("Example.ORG.").unwrap().as_str(),
            "example.org"
        );
        for (bad, says) in [
            ("", "empty"),
            ("  ", "empty"),
            ("https://static.rust-lang.org/dist", "URL"),
            ("example.org/dist", "URL"),
            ("example.org:443", "port"),
            ("exa mple.org", "not a host name"),
            ("*", "not a host name"),
            ("a..b", "not a host name"),
            ("-a.org", "not a host name"),
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn wildcards_match_names_under_the_domain_only() {
        let w = HostPattern::parse("*.example.org").unwrap();
        assert!(w.matches("a.example.org") && w.matches("a.b.example.org"));
        assert!(!w.matches("example.org") && !w.matches("badexample.org"));
        let exact = HostPattern::parse("example.org").unwrap();
        assert!(exact.matches("example.org") && !exact.matches("a.example.org"));
        let net = Network::Hosts(vec![exact]);
        assert!(net.allows("example.org") && !net.allows("other.org"));
        assert!(Network::Any.allows("anything.org") && !Network::Off.allows("anything.org"));
    }
}
