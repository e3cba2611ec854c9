//! Kubernetes name syntax (DNS-1123), so nothing from a token can reshape an upstream URL.

/// Whether `name` is a DNS-1123 label, the syntax of a namespace name: 1 to 63 characters of
/// `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && is_label_syntax(name)
}

/// Whether `name` is a DNS-1123 subdomain, the syntax of most Kubernetes object names (VMs included):
/// at most 253 characters, dot-separated labels of `a-z`, `0-9` and `-` that start and end with a
/// letter or digit. `.` and `..` are never valid.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_label_syntax)
}

fn is_label_syntax(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|byte| alphanumeric(byte) || *byte == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "0", "lab-1-9", "pentest-ubuntu-3-9", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "../kube-system",
            "a/b",
            "a b",
            "ä",
            &"a".repeat(64),
            "a%2Fb",
        ] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        for good in [
            "ubuntu",
            "vm.lab-1",
            "a.b.c",
            &format!("{}.{}", "a".repeat(63), "b".repeat(100)),
        ] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "Ubuntu",
            "a/b",
            "a?b",
            "a#b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
