//! The notifier's network policy: which addresses a webhook may reach, and how much of an
//! answer is read.
//!
//! A rule admin chooses a webhook's host and port; without a policy that is a way into the
//! notifier's network (`http://127.0.0.1:5432`, `http://169.254.169.254/latest/...`, a port
//! scan). So webhook requests go through their own HTTP client whose DNS resolver drops every
//! address that is not public (see [`non_public`]) **when the connection is made**: the
//! address checked is the address connected to, so a name that resolves to a public address
//! first and to 127.0.0.1 later (DNS rebinding) gains nothing. Hosts written as IP literals
//! (`127.0.0.1`, `[::ffff:127.0.0.1]`, `2130706433`, `0x7f.1`, `0177.0.0.1`: the URL parser
//! turns every decimal, octal and hex form into the address) are never resolved and are
//! checked before the request. That client uses no proxy (a proxy would connect for us).
//!
//! The operator opts in with `--allow-private-targets` (everything) or
//! `--allow-target-network CIDR` (those networks only). Discord and Telegram requests go to
//! the operator's `--discord-api-url` / `--telegram-api-url` and are not filtered: a rule
//! admin chooses only the webhook id, token and chat there, not the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tracing::warn;

/// Most bytes of a sink's answer that are read (64 KiB); the rest is never received, so an
/// endless or huge answer costs no more memory than this.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Which addresses webhook requests may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// `--allow-private-targets`: any address.
    pub allow_private: bool,
    /// `--allow-target-network`: these networks, even if not public.
    pub allowed_networks: Vec<IpNet>,
}

/// A webhook target whose address the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "webhook target refused: its host is a {kind} address; the notifier sends only to public \
     addresses unless its operator allows more (ta-feed notify --allow-private-targets or \
     --allow-target-network)"
)]
pub struct TargetRefused {
    /// What the address is: "loopback", "private", "link-local", ...
    pub kind: &'static str,
}

/// Why `ip` is not a public unicast address (loopback, private, link-local, unique-local,
/// multicast, unspecified, broadcast, documentation, shared or reserved), or `None` for a
/// public one. IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002::/16`) IPv6 addresses are judged by the IPv4 address they carry.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "unspecified", // 0.0.0.0/8 "this network"
        (127, _, _) => "loopback",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "reserved (benchmarking)",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // ::/96 (IPv4-compatible, deprecated) and ::/8 in general
        [0, 0, 0, 0, 0, 0, _, _] => "reserved (IPv4-compatible)",
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return non_public_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => "private (local NAT64)",
        [0x0100, 0, 0, 0, ..] => "reserved (discard)",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x2001, 0, ..] => "reserved (Teredo)",
        [0x2002, hi, lo, ..] => return non_public_v4(embedded(hi, lo)),
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique-local",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "private (site-local)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

impl NetworkPolicy {
    /// Ok when a webhook may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), TargetRefused> {
        if self.allow_private {
            return Ok(());
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match non_public(ip) {
            None => Ok(()),
            Some(_) if self.allowed_networks.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(kind) => Err(TargetRefused { kind }),
        }
    }

    /// The check of a URL host that is an IP literal (never resolved); `Ok` for names, which
    /// the resolver checks at connect time.
    pub fn check_host(&self, host: Option<url::Host<&str>>) -> Result<(), TargetRefused> {
        match host {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// The webhook client's DNS resolver: the system's (`getaddrinfo`), keeping only the
/// addresses the policy allows; none left → [`TargetRefused`].
#[derive(Debug, Clone)]
struct GuardedResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut refused: Option<(IpAddr, TargetRefused)> = None;
            for addr in tokio::net::lookup_host((host.as_str(), 0)).await? {
                match policy.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(r) => {
                        refused.get_or_insert((addr.ip(), r));
                    }
                }
            }
            if allowed.is_empty() {
                if let Some((ip, r)) = refused {
                    // the operator's log names the address; the table (readable by
                    // ta_reader) gets only the kind
                    warn!(host = %crate::text::sanitize(&host, 253), address = %ip, kind = r.kind,
                          "notify: webhook host resolves to a refused address");
                    return Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The notifier's HTTP clients.
#[derive(Debug, Clone)]
pub struct HttpClients {
    /// Discord and Telegram: the operator's API bases.
    pub api: reqwest::Client,
    /// Webhooks: [`GuardedResolver`], no proxy.
    pub webhook: reqwest::Client,
    pub policy: Arc<NetworkPolicy>,
}

impl HttpClients {
    /// Both clients: `timeout` per request (connect, send, answer), no redirects followed.
    pub fn new(timeout: Duration, policy: NetworkPolicy) -> Result<HttpClients, reqwest::Error> {
        let policy = Arc::new(policy);
        let base = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!(
                    "ta-feed/",
                    env!("CARGO_PKG_VERSION"),
                    " (pg_ta notify)"
                ))
        };
        Ok(HttpClients {
            api: base().build()?,
            webhook: base()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver {
                    policy: policy.clone(),
                }))
                .build()?,
            policy,
        })
    }
}

/// At most [`MAX_RESPONSE_BYTES`] of `response`'s body; reading stops there (the rest is
/// never received: the connection is dropped with the response). A body that fails midway
/// gives what arrived.
pub async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The [`TargetRefused`] somewhere in `e`'s chain of causes (the resolver's error, wrapped by
/// hyper and reqwest).
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<TargetRefused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<TargetRefused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (case, address, expected kind; None = public)
    #[test]
    fn address_classes() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("TC1 loopback", "127.0.0.1", Some("loopback")),
            ("TC2 loopback /8", "127.255.0.9", Some("loopback")),
            ("TC3 cloud metadata", "169.254.169.254", Some("link-local")),
            ("TC4 10/8", "10.1.2.3", Some("private")),
            ("TC5 172.16/12", "172.31.255.1", Some("private")),
            ("TC6 172.32 is public", "172.32.0.1", None),
            ("TC7 192.168/16", "192.168.0.1", Some("private")),
            ("TC8 unspecified", "0.0.0.0", Some("unspecified")),
            ("TC9 this network", "0.1.2.3", Some("unspecified")),
            (
                "TC10 CGNAT",
                "100.64.0.1",
                Some("shared (carrier-grade NAT)"),
            ),
            ("TC11 multicast", "224.0.0.1", Some("multicast")),
            ("TC12 broadcast", "255.255.255.255", Some("broadcast")),
            ("TC13 reserved", "240.0.0.1", Some("reserved")),
            ("TC14 documentation", "192.0.2.7", Some("documentation")),
            ("TC15 public v4", "1.1.1.1", None),
            ("TC16 public v4 (discord)", "162.159.135.232", None),
            ("TC17 v6 loopback", "::1", Some("loopback")),
            ("TC18 v6 unspecified", "::", Some("unspecified")),
            (
                "TC19 v4-mapped loopback",
                "::ffff:127.0.0.1",
                Some("loopback"),
            ),
            (
                "TC20 v4-mapped metadata",
                "::ffff:169.254.169.254",
                Some("link-local"),
            ),
            ("TC21 v4-mapped public", "::ffff:1.1.1.1", None),
            (
                "TC22 v4-compatible",
                "::127.0.0.1",
                Some("reserved (IPv4-compatible)"),
            ),
            ("TC23 link-local v6", "fe80::1", Some("link-local")),
            ("TC24 unique-local", "fd00::1", Some("unique-local")),
            ("TC25 unique-local fc", "fc12::1", Some("unique-local")),
            ("TC26 multicast v6", "ff02::1", Some("multicast")),
            (
                "TC27 NAT64 of loopback",
                "64:ff9b::7f00:1",
                Some("loopback"),
            ),
            ("TC28 NAT64 of public", "64:ff9b::101:101", None),
            ("TC29 6to4 of private", "2002:a00:1::1", Some("private")),
            (
                "TC30 documentation v6",
                "2001:db8::1",
                Some("documentation"),
            ),
            ("TC31 public v6", "2606:4700:4700::1111", None),
            ("TC32 site-local", "fec0::1", Some("private (site-local)")),
        ];
        for (name, addr, want) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(non_public(ip), *want, "{name}");
        }
    }

    #[test]
    fn policy_and_literal_hosts() {
        let strict = NetworkPolicy::default();
        let open = NetworkPolicy {
            allow_private: true,
            ..NetworkPolicy::default()
        };
        let listed = NetworkPolicy {
            allow_private: false,
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        };
        // every spelling of 127.0.0.1 that the URL parser accepts is an IP literal
        for url in [
            "http://127.0.0.1:8080/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://0177.0.0.1/x",
            "http://127.1/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:7f00:1]/x",
        ] {
            let u = url::Url::parse(url).unwrap();
            assert_eq!(
                strict.check_host(u.host()),
                Err(TargetRefused { kind: "loopback" }),
                "{url}"
            );
            assert_eq!(open.check_host(u.host()), Ok(()), "{url}");
            assert_eq!(listed.check_host(u.host()), Ok(()), "{url}");
        }
        let u = url::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
        assert!(listed.check_host(u.host()).is_err());
        let u = url::Url::parse("http://[fd00::5]:9/").unwrap();
        assert!(strict.check_host(u.host()).is_err());
        assert!(listed.check_host(u.host()).is_ok());
        // names are checked by the resolver
        let u = url::Url::parse("http://localhost:1/").unwrap();
        assert_eq!(strict.check_host(u.host()), Ok(()));
        let u = url::Url::parse("https://93.184.215.14/hook").unwrap();
        assert_eq!(strict.check_host(u.host()), Ok(()));
    }

    /// The resolver keeps only allowed addresses, at connect time.
    #[tokio::test]
    async fn resolver_refuses_names_of_local_addresses() {
        let r = GuardedResolver {
            policy: Arc::new(NetworkPolicy::default()),
        };
        let e = match r.resolve("localhost".parse::<Name>().unwrap()).await {
            Err(e) => e,
            Ok(a) => panic!("localhost resolved to {:?}", a.collect::<Vec<_>>()),
        };
        let refused = refusal_in(e.as_ref()).expect("a TargetRefused");
        assert_eq!(refused.kind, "loopback");
        let r = GuardedResolver {
            policy: Arc::new(NetworkPolicy {
                allow_private: true,
                ..NetworkPolicy::default()
            }),
        };
        let addrs: Vec<SocketAddr> = r
            .resolve("localhost".parse::<Name>().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
