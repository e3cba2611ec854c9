//! Kubernetes name rules (DNS-1123) for the two names that reach an upstream URL: the namespace
//! and the VirtualMachineInstance name. Minting and verification check them, so nothing from a
//! token can reshape an upstream URL, and the connector checks them again before it dials.
//!
//! A namespace is a DNS-1123 label and a VirtualMachineInstance name a DNS-1123 subdomain, the
//! rules the API server itself enforces. Neither rule admits `/`, `?`, `#`, `%`, whitespace or a
//! `.`/`..` segment, so a name that passes cannot change the path, add a query or point elsewhere.
use std::fmt;

/// Longest namespace the API server accepts (DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest object name the API server accepts (DNS-1123 subdomain).
pub const MAX_VMI_NAME_LEN: usize = 253;

/// Which of the two names was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameField {
    /// The Kubernetes namespace.
    Namespace,
    /// The VirtualMachineInstance name.
    VmiName,
}

impl fmt::Display for NameField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameField::Namespace => "namespace",
            NameField::VmiName => "VMI name",
        })
    }
}

/// What is wrong with a rejected name. The name itself is never repeated: it comes from a
/// client and may be arbitrarily long or hostile to logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    #[error("is empty")]
    Empty,
    /// The name is longer than the rule allows.
    #[error("is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
        /// The maximum for this kind of name.
        max: usize,
    },
    /// A byte outside the allowed set (lowercase ASCII letters, digits, `-`, and `.` in VMI names).
    #[error("has a character that is not allowed at byte {index}")]
    InvalidCharacter {
        /// Byte offset of the first offending character.
        index: usize,
    },
    /// A label (the whole namespace, or a dot-separated part of a VMI name) starts or ends with
    /// something other than a letter or digit, or is empty.
    #[error("has a label that does not start and end with a lowercase letter or digit")]
    BadLabelEdge,
}

/// A namespace or VMI name that is not a valid Kubernetes name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct InvalidNameError {
    /// Which name was rejected.
    pub field: NameField,
    /// Why it was rejected.
    pub problem: NameProblem,
}

/// Checks that `namespace` is a DNS-1123 label: 1 to 63 of `a-z`, `0-9`, `-`, starting and
/// ending with a letter or digit.
pub fn validate_namespace(namespace: &str) -> Result<(), InvalidNameError> {
    check_name(namespace, MAX_NAMESPACE_LEN, false).map_err(|problem| InvalidNameError {
        field: NameField::Namespace,
        problem,
    })
}

/// Checks that `vmi_name` is a DNS-1123 subdomain: at most 253 bytes of dot-separated labels,
/// each made of `a-z`, `0-9`, `-` and starting and ending with a letter or digit.
pub fn validate_vmi_name(vmi_name: &str) -> Result<(), InvalidNameError> {
    check_name(vmi_name, MAX_VMI_NAME_LEN, true).map_err(|problem| InvalidNameError {
        field: NameField::VmiName,
        problem,
    })
}

fn check_name(name: &str, max: usize, dots_allowed: bool) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.len() > max {
        return Err(NameProblem::TooLong {
            len: name.len(),
            max,
        });
    }
    let allowed = |byte: u8| {
        byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'-'
            || (dots_allowed && byte == b'.')
    };
    if let Some(index) = name.bytes().position(|byte| !allowed(byte)) {
        return Err(NameProblem::InvalidCharacter { index });
    }
    let alphanumeric = |byte: Option<&u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric());
    let edges_ok = name.split('.').all(|label| {
        let bytes = label.as_bytes();
        alphanumeric(bytes.first()) && alphanumeric(bytes.last())
    });
    if edges_ok {
        Ok(())
    } else {
        Err(NameProblem::BadLabelEdge)
    }
}

/// Whether `name` is a DNS-1123 label, the syntax of a namespace name (see
/// [`validate_namespace`] for the reason when it is not).
pub fn is_dns1123_label(name: &str) -> bool {
    validate_namespace(name).is_ok()
}

/// Whether `name` is a DNS-1123 subdomain, the syntax of most Kubernetes object names, VMs
/// included (see [`validate_vmi_name`] for the reason when it is not).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    validate_vmi_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace_problem(name: &str) -> Option<NameProblem> {
        validate_namespace(name).err().map(|e| e.problem)
    }

    fn vmi_problem(name: &str) -> Option<NameProblem> {
        validate_vmi_name(name).err().map(|e| e.problem)
    }

    #[test]
    fn accepts_typical_namespaces() {
        for name in ["default", "lab-1", "a", "0", "kube-system", &"a".repeat(63)] {
            assert_eq!(namespace_problem(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_bad_namespaces_with_the_reason() {
        assert_eq!(namespace_problem(""), Some(NameProblem::Empty));
        assert_eq!(
            namespace_problem(&"a".repeat(64)),
            Some(NameProblem::TooLong { len: 64, max: 63 })
        );
        assert_eq!(
            namespace_problem("Default"),
            Some(NameProblem::InvalidCharacter { index: 0 })
        );
        assert_eq!(
            namespace_problem("a.b"),
            Some(NameProblem::InvalidCharacter { index: 1 })
        );
        assert_eq!(
            namespace_problem("ns/../x"),
            Some(NameProblem::InvalidCharacter { index: 2 })
        );
        assert_eq!(namespace_problem("-ns"), Some(NameProblem::BadLabelEdge));
        assert_eq!(namespace_problem("ns-"), Some(NameProblem::BadLabelEdge));
    }

    #[test]
    fn accepts_subdomain_vmi_names() {
        for name in ["vm", "vm-1", "ubuntu.lab-2", "a.b.c", &"a".repeat(253)] {
            assert_eq!(vmi_problem(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_vmi_names_that_could_alter_the_path() {
        for (name, index) in [
            ("vm?x=1", 2),
            ("vm#f", 2),
            ("vm/vnc", 2),
            ("vm%2F", 2),
            ("vm name", 2),
            ("VM", 0),
            ("vm\n", 2),
            ("vmé", 2),
        ] {
            assert_eq!(
                vmi_problem(name),
                Some(NameProblem::InvalidCharacter { index }),
                "{name:?}"
            );
        }
        for name in [".", "..", "vm.", ".vm", "a..b", "a.-b", "a-.b"] {
            assert_eq!(
                vmi_problem(name),
                Some(NameProblem::BadLabelEdge),
                "{name:?}"
            );
        }
        assert_eq!(
            vmi_problem(&"a".repeat(254)),
            Some(NameProblem::TooLong { len: 254, max: 253 })
        );
    }

    #[test]
    fn error_names_the_field_but_not_the_value() {
        let error = validate_vmi_name("secret-looking?value").unwrap_err();
        let text = error.to_string();
        assert_eq!(
            text,
            "invalid VMI name: has a character that is not allowed at byte 14"
        );
        assert!(!text.contains("secret-looking"));
    }

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
