//! Outbound destination rules shared by every part of Kiln that connects somewhere a request
//! named (git checkouts asked for through the API; notifications later).
//!
//! A [`DestinationPolicy`] refuses link-local and cloud-metadata addresses always, and
//! loopback and private ranges unless `workers.toml` allows them. [`DestinationPolicy::resolve`]
//! resolves a host and checks *every* address it gets; the caller then connects only to those
//! addresses (pinning them: `http.curloptResolve` for git, a custom resolver for reqwest), so a
//! second DNS answer at connect time (DNS rebinding) is never used.
//!
//! ```
//! use kiln_net::{DestinationPolicy, FixedResolver};
//! let dns = FixedResolver::new([("repo.example", "203.0.113.7"), ("meta.example", "169.254.169.254")]);
//! let policy = DestinationPolicy::default();
//! assert_eq!(policy.resolve("repo.example", 443, &dns).unwrap(), vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]);
//! assert!(policy.resolve("meta.example", 443, &dns).is_err());
//! ```

mod class;
mod https;

pub use class::{classify, AddressClass};
pub use https::{HttpsTarget, MAX_URL_LEN};

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};

/// Which destinations outbound connections may reach, beyond the public internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationPolicy {
    /// Allow 127.0.0.0/8 and ::1 (a git server on the same machine, in tests or labs).
    pub allow_loopback: bool,
    /// Allow 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 (an internal git server).
    pub allow_private: bool,
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// An address of the host is in a range the policy refuses.
    #[error("{host} resolves to a {class} address, which is refused")]
    Refused {
        /// The host as asked for.
        host: String,
        /// The refused address's range.
        class: AddressClass,
    },
    /// The host did not resolve.
    #[error("{host} does not resolve")]
    Unresolved {
        /// The host as asked for.
        host: String,
    },
    /// The URL is not one Kiln accepts for an outbound connection.
    #[error("{0}")]
    BadUrl(String),
}

impl DestinationPolicy {
    /// Whether an address of `class` may be reached.
    pub fn allows(&self, class: AddressClass) -> bool {
        match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private => self.allow_private,
            AddressClass::LinkLocal
            | AddressClass::Metadata
            | AddressClass::Unspecified
            | AddressClass::Multicast
            | AddressClass::Reserved => false,
        }
    }

    /// Checks one address (`host` names it in the error).
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), NetError> {
        let class = classify(ip);
        if self.allows(class) {
            Ok(())
        } else {
            Err(NetError::Refused {
                host: host.to_owned(),
                class,
            })
        }
    }

    /// Resolves `host` with `resolver` and checks every address: one refused address refuses
    /// the host (an attacker's DNS may mix a public and a private answer). Returns the
    /// addresses to connect to, and only to.
    pub fn resolve(&self, host: &str, port: u16, resolver: &dyn Resolve) -> Result<Vec<IpAddr>, NetError> {
        let mut ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => resolver.lookup(host, port).unwrap_or_default(),
        };
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return Err(NetError::Unresolved {
                host: host.to_owned(),
            });
        }
        for ip in &ips {
            self.check(host, *ip)?;
        }
        Ok(ips)
    }
}

/// Name resolution, so that tests can give a name the answer they need.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`.
    fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok((host, port).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// A fixed table of names (for tests, and for hosts an operator pins by configuration).
#[derive(Debug, Clone, Default)]
pub struct FixedResolver(HashMap<String, Vec<IpAddr>>);

impl FixedResolver {
    /// A table of `(name, address)` pairs; a name may appear more than once.
    ///
    /// # Panics
    /// When an address does not parse.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in pairs {
            map.entry(name.to_ascii_lowercase())
                .or_default()
                .push(ip.parse().expect("an IP address"));
        }
        FixedResolver(map)
    }
}

impl Resolve for FixedResolver {
    fn lookup(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_refused_even_when_everything_else_is_allowed() {
        let open = DestinationPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(open.check("h", ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "::1",
            "fd12::1",
            "8.8.8.8",
        ] {
            assert!(open.check("h", ip.parse().unwrap()).is_ok(), "{ip}");
        }
    }

    #[test]
    fn loopback_and_private_need_the_policy() {
        let strict = DestinationPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(strict.check("h", ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(strict.check("h", "140.82.112.3".parse().unwrap()).is_ok());
        assert!(strict.check("h", "2606:4700::1111".parse().unwrap()).is_ok());
    }

    #[test]
    fn one_refused_answer_refuses_the_host() {
        let dns = FixedResolver::new([("mixed.example", "203.0.113.9"), ("mixed.example", "10.0.0.5")]);
        let err = DestinationPolicy::default()
            .resolve("mixed.example", 443, &dns)
            .unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Refused {
                    class: AddressClass::Private,
                    ..
                }
            ),
            "{err}"
        );
        let err = DestinationPolicy::default()
            .resolve("nowhere.example", 443, &dns)
            .unwrap_err();
        assert!(matches!(err, NetError::Unresolved { .. }), "{err}");
    }
}
