//! The SSRF guard. A target is checked after DNS resolution, by the resolver the HTTP client
//! itself connects with, so the addresses checked are the addresses used (no DNS-rebinding
//! window between a check and the connection). IP literals, which skip DNS, are checked before
//! each request; redirects are never followed.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether an address is a public unicast address (not loopback, private, link-local,
/// shared, documentation, multicast, unspecified or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 (embeds an IPv4 address)
        || (s[0] == 0x2002) // 6to4 (embeds an IPv4 address)
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible and other ::/96
}

/// Checks the URL's form: http or https, a host, no credentials; and an IP-literal host
/// against the address rules.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, String> {
    let u = Url::parse(url).map_err(|e| format!("invalid url: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err("url must start with http:// or https://".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    match u.host() {
        None => return Err("url has no host".into()),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(u)
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "refused: {ip} is a loopback, private or link-local address"
        ))
    }
}

/// Resolves `host` and checks every address (all must be allowed: a name that also points
/// inside is refused rather than tried on its public half).
pub async fn resolve_checked(host: &str, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host}: no address"));
    }
    for a in &addrs {
        check_ip(a.ip(), allow_private).map_err(|e| format!("{e} ({host})"))?;
    }
    Ok(addrs)
}

/// The resolver the delivery client connects with.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

#[derive(Debug)]
struct Refused(String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs = resolve_checked(name.as_str(), allow)
                .await
                .map_err(|e| Box::new(Refused(e)) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries and validation pings: guarded resolver, no redirects, no
/// proxy from the environment, connection pooling. (No fallback to an unguarded client.)
pub fn client(allow_private: bool, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .user_agent("Pressoir-Webhooks/1")
        .build()
        .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))
}

/// An error with its causes, the way an attempt log shows it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should not be public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn checks_url_forms() {
        assert!(check_url("ftp://example.com/x", false).is_err());
        assert!(check_url("http://user:pw@example.com/x", false).is_err());
        assert!(
            check_url("http://127.0.0.1:8080/x", false)
                .unwrap_err()
                .contains("refused")
        );
        assert!(check_url("http://[::1]/x", false).is_err());
        assert!(check_url("http://0x7f000001/x", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/x", true).is_ok());
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("not a url", false).is_err());
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        let e = resolve_checked("localhost", false).await.unwrap_err();
        assert!(e.contains("refused") || e.contains("cannot resolve"), "{e}");
        if let Ok(a) = resolve_checked("localhost", true).await {
            assert!(a.iter().all(|a| a.ip().is_loopback()));
        }
    }
}
