//! The console URL: `/{token}/{vmi}` or `/{prefix…}/{token}/{vmi}`, and its redacted form for logs.
use std::fmt;

use percent_encoding::percent_decode_str;

/// The `host_path_prefix` of the Python original, split into segments.
///
/// `ws_proxy`, `/ws_proxy`, `ws_proxy/` and `/ws_proxy/` are the same prefix; a prefix may have
/// several segments (`apps/console` matches `/apps/console/{token}/{vmi}`). An empty prefix (or
/// only slashes) means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPrefix {
    segments: Vec<String>,
}

impl PathPrefix {
    /// No prefix: console URLs are `/{token}/{vmi}`.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a prefix written with or without leading, trailing or doubled slashes.
    pub fn new(prefix: &str) -> Self {
        let segments = prefix
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
            .collect();
        Self { segments }
    }

    /// Whether there is no prefix.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// Why a request path is not a console URL. The messages are the Python original's close reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with the configured `host_path_prefix`.
    #[error("wrong path prefix")]
    WrongPrefix,
    /// After the prefix there are not exactly two non-empty segments (token, VM name), or a
    /// segment is not valid percent-encoded UTF-8.
    #[error("invalid url")]
    InvalidUrl,
}

impl PathError {
    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            PathError::WrongPrefix => "wrong_path_prefix",
            PathError::InvalidUrl => "invalid_url",
        }
    }
}

/// The two parts of a console URL, percent-decoded. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsolePath {
    /// The JWT, as the client sent it.
    pub token: String,
    /// The requested VirtualMachineInstance name.
    pub vmi_name: String,
}

impl fmt::Debug for ConsolePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsolePath")
            .field("token", &REDACTED)
            .field("vmi_name", &self.vmi_name)
            .finish()
    }
}

const REDACTED: &str = "<redacted>";

/// The path part of a request target: everything before `?` or `#`.
fn path_only(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    &target[..end]
}

/// The segments after the leading slash; one trailing slash is tolerated.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').collect()
}

/// Splits a request target (path plus optional query, which is ignored) into token and VM name:
/// the Python original's `/{prefix}/{token}/{vmi}` form only.
pub fn parse_console_path(target: &str, prefix: &PathPrefix) -> Result<ConsolePath, PathError> {
    match parse_console_target(target, prefix, true)? {
        ConsoleTarget {
            token: Some(token),
            vmi_name,
        } => Ok(ConsolePath { token, vmi_name }),
        ConsoleTarget { token: None, .. } => Err(PathError::InvalidUrl),
    }
}

/// A console URL with or without a token in it: `/{prefix}/{token}/{vmi}` or `/{prefix}/{vmi}`
/// (a one-segment path is always a VM name; the token then comes from another source).
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleTarget {
    /// The token from the path, if the path has one.
    pub token: Option<String>,
    /// The requested VirtualMachineInstance name.
    pub vmi_name: String,
}

impl fmt::Debug for ConsoleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleTarget")
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("vmi_name", &self.vmi_name)
            .finish()
    }
}

/// Splits a request target into the optional path token and the VM name. With `path_tokens`
/// off (the path token source disabled) only `/{prefix}/{vmi}` is a console URL.
pub fn parse_console_target(
    target: &str,
    prefix: &PathPrefix,
    path_tokens: bool,
) -> Result<ConsoleTarget, PathError> {
    let parts = segments(path_only(target));
    let prefix_len = prefix.segments.len();
    if parts.len() < prefix_len
        || parts
            .iter()
            .zip(&prefix.segments)
            .any(|(part, expected)| decode(part).as_deref() != Some(expected.as_str()))
    {
        return Err(PathError::WrongPrefix);
    }
    let non_empty = |segment: &str| decode(segment).filter(|decoded| !decoded.is_empty());
    match &parts[prefix_len..] {
        [vmi_name] => Ok(ConsoleTarget {
            token: None,
            vmi_name: non_empty(vmi_name).ok_or(PathError::InvalidUrl)?,
        }),
        [token, vmi_name] if path_tokens => Ok(ConsoleTarget {
            token: Some(non_empty(token).ok_or(PathError::InvalidUrl)?),
            vmi_name: non_empty(vmi_name).ok_or(PathError::InvalidUrl)?,
        }),
        _ => Err(PathError::InvalidUrl),
    }
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// The longest redacted path written to logs; longer ones are cut.
const MAX_LOGGED_PATH_LEN: usize = 256;

/// A request target safe to log: the token segment (and anything that could be one) replaced by
/// `<redacted>`, the query string dropped.
///
/// Prefix segments that match are kept, and so is the last segment when at least two follow the
/// prefix (it is the VM name). Every other segment is redacted, so a token never reaches a log
/// even when the path is malformed.
pub fn redact_target(target: &str, prefix: &PathPrefix) -> String {
    let path = path_only(target);
    let has_query = path.len() < target.len();
    let parts = segments(path);
    let prefix_matches = parts.len() >= prefix.segments.len()
        && parts
            .iter()
            .zip(&prefix.segments)
            .all(|(part, expected)| decode(part).as_deref() == Some(expected.as_str()));
    let kept_prefix = if prefix_matches {
        prefix.segments.len()
    } else {
        0
    };
    let rest = parts.len() - kept_prefix;
    let mut redacted = String::new();
    for (index, part) in parts.iter().enumerate() {
        redacted.push('/');
        let is_prefix = index < kept_prefix;
        let is_vm_name = prefix_matches && rest >= 2 && index == parts.len() - 1;
        if is_prefix || is_vm_name {
            redacted.push_str(part);
        } else if !part.is_empty() {
            redacted.push_str(REDACTED);
        }
    }
    if has_query {
        redacted.push('?');
        redacted.push_str(REDACTED);
    }
    if redacted.len() > MAX_LOGGED_PATH_LEN {
        let mut cut = MAX_LOGGED_PATH_LEN;
        while !redacted.is_char_boundary(cut) {
            cut -= 1;
        }
        redacted.truncate(cut);
        redacted.push('…');
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_segment_path_is_a_vm_and_path_tokens_can_be_turned_off() {
        let prefix = PathPrefix::new("ws_proxy");
        let vm_only = parse_console_target("/ws_proxy/ubuntu?x=1", &prefix, true).unwrap();
        assert_eq!((vm_only.token, vm_only.vmi_name.as_str()), (None, "ubuntu"));
        let with_token = parse_console_target("/ws_proxy/t.p.s/ubuntu", &prefix, true).unwrap();
        assert_eq!(with_token.token.as_deref(), Some("t.p.s"));
        assert!(!format!("{with_token:?}").contains("t.p.s"));
        assert_eq!(
            parse_console_target("/ws_proxy/t.p.s/ubuntu", &prefix, false),
            Err(PathError::InvalidUrl)
        );
        assert!(parse_console_target("/ws_proxy/ubuntu", &prefix, false).is_ok());
        assert_eq!(
            parse_console_path("/ws_proxy/ubuntu", &prefix),
            Err(PathError::InvalidUrl)
        );
    }

    #[test]
    fn prefix_is_accepted_with_or_without_slashes_and_with_several_segments() {
        for written in [
            "ws_proxy",
            "/ws_proxy",
            "ws_proxy/",
            "/ws_proxy/",
            "//ws_proxy//",
        ] {
            assert_eq!(PathPrefix::new(written).segments(), ["ws_proxy"]);
        }
        assert_eq!(
            PathPrefix::new("apps/console").segments(),
            ["apps", "console"]
        );
        assert!(PathPrefix::new("/").is_empty());
        assert_eq!(PathPrefix::new("a/b").to_string(), "/a/b");
    }

    #[test]
    fn console_paths_parse_without_and_with_prefix() {
        let parsed = parse_console_path("/tok.en/ubuntu", &PathPrefix::none()).unwrap();
        assert_eq!(
            (parsed.token.as_str(), parsed.vmi_name.as_str()),
            ("tok.en", "ubuntu")
        );

        let prefix = PathPrefix::new("apps/console");
        let parsed = parse_console_path("/apps/console/t/kali?x=1", &prefix).unwrap();
        assert_eq!(
            (parsed.token.as_str(), parsed.vmi_name.as_str()),
            ("t", "kali")
        );
        assert_eq!(
            parse_console_path("/apps/console/t/kali/", &prefix)
                .unwrap()
                .vmi_name,
            "kali"
        );
    }

    #[test]
    fn segments_are_percent_decoded() {
        let parsed = parse_console_path("/a%2Eb/vm%2d1", &PathPrefix::none()).unwrap();
        assert_eq!(
            (parsed.token.as_str(), parsed.vmi_name.as_str()),
            ("a.b", "vm-1")
        );
        assert_eq!(
            parse_console_path("/%ff/vm", &PathPrefix::none()),
            Err(PathError::InvalidUrl)
        );
    }

    #[test]
    fn malformed_paths_are_rejected_with_the_originals_reasons() {
        let none = PathPrefix::none();
        for bad in ["/", "/only-token", "/a/b/c", "//vm", "/t//", "/t/vm//"] {
            assert_eq!(
                parse_console_path(bad, &none),
                Err(PathError::InvalidUrl),
                "{bad}"
            );
        }
        let prefix = PathPrefix::new("ws_proxy");
        assert_eq!(
            parse_console_path("/t/vm", &prefix),
            Err(PathError::WrongPrefix)
        );
        assert_eq!(
            parse_console_path("/other/t/vm", &prefix),
            Err(PathError::WrongPrefix)
        );
        assert_eq!(
            parse_console_path("/ws_proxy/t", &prefix),
            Err(PathError::InvalidUrl)
        );
        assert_eq!(PathError::WrongPrefix.to_string(), "wrong path prefix");
        assert_eq!(PathError::InvalidUrl.to_string(), "invalid url");
    }

    #[test]
    fn redaction_keeps_prefix_and_vm_name_only() {
        let prefix = PathPrefix::new("ws_proxy");
        assert_eq!(
            redact_target("/ws_proxy/secret.jwt/ubuntu?token=x", &prefix),
            "/ws_proxy/<redacted>/ubuntu?<redacted>"
        );
        assert_eq!(
            redact_target("/ws_proxy/secret.jwt", &prefix),
            "/ws_proxy/<redacted>"
        );
        assert_eq!(
            redact_target("/secret.jwt/ubuntu", &prefix),
            "/<redacted>/<redacted>"
        );
        assert_eq!(
            redact_target("/a/secret.jwt/ubuntu", &PathPrefix::none()),
            "/<redacted>/<redacted>/ubuntu"
        );
        let long = format!("/{}/{}", "x".repeat(400), "y".repeat(400));
        assert!(redact_target(&long, &PathPrefix::none()).len() <= MAX_LOGGED_PATH_LEN + 3);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let parsed = parse_console_path("/very-secret/ubuntu", &PathPrefix::none()).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("very-secret"));
        assert!(shown.contains("ubuntu"));
    }
}
