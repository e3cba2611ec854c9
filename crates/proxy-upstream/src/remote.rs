//! The upstream base URL: scheme, host, port and an optional path prefix.
use std::fmt;
use std::net::IpAddr;

/// Why a `remote_url` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteUrlError {
    /// The text is not a URI at all.
    #[error("the remote URL is not an absolute URL like ws://host:port or wss://host:port")]
    Malformed,
    /// The scheme is not `ws`, `wss`, `http` or `https`.
    #[error("unsupported scheme {scheme:?} in the remote URL (use ws, wss, http or https)")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// No host.
    #[error("the remote URL has no host")]
    MissingHost,
    /// `user:password@` in the authority: credentials belong in the token file.
    #[error("the remote URL must not carry user information")]
    UserInfo,
    /// A query or fragment: the connector builds the query itself.
    #[error("the remote URL must not have a query or fragment")]
    QueryOrFragment,
    /// A bracketed host that is not an IPv6 address.
    #[error("the remote URL has a malformed IPv6 host")]
    BadIpv6Host,
}

/// Where the API server is, as parsed from `remote_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    pub(crate) tls: bool,
    pub(crate) host: RemoteHost,
    pub(crate) port: u16,
    /// `host`, `host:port`, `[v6]` or `[v6]:port`, exactly as written (lowercased).
    pub(crate) authority: String,
    /// The base URL's own path without a trailing `/` (empty when there is none).
    pub(crate) base_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteHost {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for RemoteHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteHost::Ip(ip) => ip.fmt(f),
            RemoteHost::Name(name) => f.write_str(name),
        }
    }
}

impl RemoteUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, RemoteUrlError> {
        if url.contains(['?', '#']) {
            return Err(RemoteUrlError::QueryOrFragment);
        }
        let uri: http::Uri = url.parse().map_err(|_| RemoteUrlError::Malformed)?;
        let scheme = uri.scheme_str().ok_or(RemoteUrlError::Malformed)?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => (false, 80),
            "wss" | "https" => (true, 443),
            _ => {
                return Err(RemoteUrlError::UnsupportedScheme {
                    scheme: scheme.to_owned(),
                });
            }
        };
        let authority = uri.authority().ok_or(RemoteUrlError::MissingHost)?;
        if authority.as_str().contains('@') {
            return Err(RemoteUrlError::UserInfo);
        }
        let host_text = authority.host();
        if host_text.is_empty() {
            return Err(RemoteUrlError::MissingHost);
        }
        let host = if let Some(inner) = host_text.strip_prefix('[') {
            let v6 = inner
                .strip_suffix(']')
                .and_then(|text| text.parse::<std::net::Ipv6Addr>().ok())
                .ok_or(RemoteUrlError::BadIpv6Host)?;
            RemoteHost::Ip(IpAddr::V6(v6))
        } else if let Ok(ip) = host_text.parse::<IpAddr>() {
            RemoteHost::Ip(ip)
        } else {
            RemoteHost::Name(host_text.to_ascii_lowercase())
        };
        Ok(Self {
            tls,
            host,
            port: authority.port_u16().unwrap_or(default_port),
            authority: authority.as_str().to_ascii_lowercase(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The WebSocket URI for `path_and_query` (which starts with `/`).
    pub(crate) fn websocket_uri(&self, path_and_query: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}{}{path_and_query}",
            self.authority, self.base_path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn maps_http_schemes_to_websocket_ones_with_default_ports() {
        for (url, tls, port) in [
            ("ws://localhost:8001", false, 8001),
            ("http://localhost", false, 80),
            ("wss://kubernetes.default.svc", true, 443),
            ("HTTPS://kubernetes.default.svc:6443", true, 6443),
        ] {
            let remote = RemoteUrl::parse(url).unwrap();
            assert_eq!((remote.tls, remote.port), (tls, port), "{url}");
        }
        let remote = RemoteUrl::parse("https://Example.COM:6443").unwrap();
        assert_eq!(remote.host, RemoteHost::Name("example.com".to_owned()));
        assert_eq!(remote.websocket_uri("/x"), "wss://example.com:6443/x");
    }

    #[test]
    fn accepts_ip_hosts_including_ipv6() {
        let v4 = RemoteUrl::parse("wss://10.96.0.1:443").unwrap();
        assert_eq!(
            v4.host,
            RemoteHost::Ip(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)))
        );
        let v6 = RemoteUrl::parse("wss://[fd00::1]:6443").unwrap();
        assert_eq!(
            v6.host,
            RemoteHost::Ip(IpAddr::V6("fd00::1".parse::<Ipv6Addr>().unwrap()))
        );
        assert_eq!(v6.port, 6443);
        assert_eq!(v6.websocket_uri("/vnc"), "wss://[fd00::1]:6443/vnc");
        let v6_default_port = RemoteUrl::parse("ws://[::1]").unwrap();
        assert_eq!(v6_default_port.port, 80);
    }

    #[test]
    fn keeps_a_base_path_prefix_without_trailing_slash() {
        let remote = RemoteUrl::parse("https://rancher.example/k8s/clusters/c-1/").unwrap();
        assert_eq!(remote.base_path, "/k8s/clusters/c-1");
        assert_eq!(
            remote.websocket_uri("/apis/x"),
            "wss://rancher.example/k8s/clusters/c-1/apis/x"
        );
        assert_eq!(RemoteUrl::parse("ws://h:1/").unwrap().base_path, "");
    }

    #[test]
    fn rejects_unusable_urls() {
        for (url, expected) in [
            (
                "ftp://host",
                RemoteUrlError::UnsupportedScheme {
                    scheme: "ftp".to_owned(),
                },
            ),
            ("localhost:8001", RemoteUrlError::Malformed),
            ("/just/a/path", RemoteUrlError::Malformed),
            ("ws://user:pw@host", RemoteUrlError::UserInfo),
            ("ws://host/?a=b", RemoteUrlError::QueryOrFragment),
            ("ws://host/#frag", RemoteUrlError::QueryOrFragment),
            ("ws://[zz::1]:80", RemoteUrlError::BadIpv6Host),
            ("not a url", RemoteUrlError::Malformed),
        ] {
            assert_eq!(RemoteUrl::parse(url), Err(expected), "{url}");
        }
    }
}
