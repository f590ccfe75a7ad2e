//! The one URL form a request may name for an outbound fetch: `https://HOST[:PORT]/PATH`,
//! with a host the resolver and the connecting library cannot read differently.

use std::net::IpAddr;

use crate::NetError;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A parsed `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsTarget {
    /// Host name (lowercase) or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port (443 unless given).
    pub port: u16,
}

impl HttpsTarget {
    /// Parses `url`. Refused: another scheme, credentials (`user@`), a query or fragment in
    /// the authority, control characters or spaces, and host names whose last label does not
    /// begin with a letter (numeric forms like `0x7f.1` or `2130706433`, which resolvers and
    /// URL parsers read differently). IPv4 literals must be plain dotted decimal.
    pub fn parse(url: &str) -> Result<HttpsTarget, NetError> {
        let bad = |why: &str| NetError::BadUrl(format!("{why}; expected https://HOST[:PORT]/PATH"));
        if url.len() > MAX_URL_LEN {
            return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
        }
        if url
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || !b.is_ascii())
        {
            return Err(bad(
                "contains spaces, backslashes, control or non-ASCII characters",
            ));
        }
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("only https:// is accepted"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not accepted"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (lit, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
            let ip: std::net::Ipv6Addr = lit.parse().map_err(|_| bad("not an IPv6 address in [ ]"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after the IPv6 host"))?,
                ),
            };
            (ip.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        if host.parse::<IpAddr>().is_err() && !valid_dns_name(&host) {
            return Err(bad("the host is not a DNS name or an IP address"));
        }
        Ok(HttpsTarget { host, port })
    }

    /// The host as it appears in a URL and in curl's `--resolve` (IPv6 in brackets).
    pub fn url_host(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        }
    }

    /// Whether the host is an IP literal (no name to resolve or pin).
    pub fn is_ip_literal(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// curl's `--resolve` entry pinning this host and port to `ips`: `HOST:PORT:IP[,IP…]`
    /// (git's `http.curloptResolve`).
    pub fn curl_resolve(&self, ips: &[IpAddr]) -> String {
        let addrs: Vec<String> = ips
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        format!("{}:{}:{}", self.host, self.port, addrs.join(","))
    }
}

fn valid_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }) && labels
        .last()
        .is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_are_parsed_strictly() {
        let t = HttpsTarget::parse("https://GitHub.com/o/r.git").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("github.com", 443));
        let t = HttpsTarget::parse("https://git.example:8443/r").unwrap();
        assert_eq!(t.port, 8443);
        let t = HttpsTarget::parse("https://[2001:db8::1]:444/r").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.url_host()),
            ("2001:db8::1", 444, "[2001:db8::1]".to_string())
        );
        for bad in [
            "http://github.com/o/r",
            "ssh://git@github.com/o/r",
            "git@github.com:o/r.git",
            "file:///etc",
            "/srv/repo",
            "https://user:pw@github.com/o/r",
            "https://github.com:0/r",
            "https://github.com:99999/r",
            "https://github.com:+443/r",
            "https://0x7f.1/r",
            "https://2130706433/r",
            "https://127.1/r",
            "https://a b/r",
            "https://exa_mple.com/r",
            "https://github.com\\@evil/r",
            "https:///r",
            "https://[::1/r",
        ] {
            assert!(HttpsTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pinning_entries_name_host_port_and_every_address() {
        let t = HttpsTarget::parse("https://git.example/r").unwrap();
        let ips = ["203.0.113.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        assert_eq!(t.curl_resolve(&ips), "git.example:443:203.0.113.5,[2001:db8::5]");
    }
}
