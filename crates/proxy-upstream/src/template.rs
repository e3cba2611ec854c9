//! The `api_path` template: the upstream path with `{namespace}` and `{vmi_name}` placeholders.
use std::fmt;
use std::str::FromStr;

use proxy_auth::{InvalidNameError, validate_namespace, validate_vmi_name};

/// The Python original's default upstream path (KubeVirt `v1alpha3` subresource API).
pub const DEFAULT_API_PATH: &str = "/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc";

/// The same subresource through KubeVirt's `v1` API, served by current KubeVirt releases.
pub const V1_API_PATH: &str = "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc";

const NAMESPACE_PLACEHOLDER: &str = "namespace";
const VMI_NAME_PLACEHOLDER: &str = "vmi_name";

/// A validated upstream path template.
///
/// Validation happens once, when the connector is built: the template must be an absolute path,
/// contain `{namespace}` and `{vmi_name}` exactly once each, no other `{...}`, no query or
/// fragment, and only characters allowed in a URI path (percent escapes included).
///
/// ```
/// use proxy_upstream::ApiPathTemplate;
///
/// let template: ApiPathTemplate = "/api/{namespace}/vms/{vmi_name}/vnc".parse()?;
/// assert_eq!(template.render("lab-1", "vm-a")?, "/api/lab-1/vms/vm-a/vnc");
/// assert!(template.render("lab-1", "../../secrets").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPathTemplate {
    source: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Namespace,
    VmiName,
}

/// Why an `api_path` template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template does not start with `/`.
    #[error("the API path template must start with '/'")]
    NotAbsolute,
    /// A `{...}` names something other than `namespace` or `vmi_name`.
    #[error(
        "unknown placeholder {{{name}}} in the API path template (only {{namespace}} and {{vmi_name}} exist)"
    )]
    UnknownPlaceholder {
        /// The text between the braces.
        name: String,
    },
    /// A `{` without its `}`.
    #[error("unclosed '{{' at byte {index} of the API path template")]
    UnclosedBrace {
        /// Byte offset of the `{`.
        index: usize,
    },
    /// A `}` without its `{`.
    #[error("unmatched '}}' at byte {index} of the API path template")]
    UnmatchedBrace {
        /// Byte offset of the `}`.
        index: usize,
    },
    /// A required placeholder does not appear.
    #[error("the API path template lacks the {{{placeholder}}} placeholder")]
    MissingPlaceholder {
        /// `namespace` or `vmi_name`.
        placeholder: &'static str,
    },
    /// A placeholder appears more than once.
    #[error("the {{{placeholder}}} placeholder appears more than once in the API path template")]
    RepeatedPlaceholder {
        /// `namespace` or `vmi_name`.
        placeholder: &'static str,
    },
    /// A `?` or `#`: the connector adds the query itself.
    #[error("the API path template must not contain a query or fragment (byte {index})")]
    QueryOrFragment {
        /// Byte offset of the `?` or `#`.
        index: usize,
    },
    /// A character that is not allowed in a URI path.
    #[error("character {character:?} at byte {index} is not allowed in a URI path")]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset.
        index: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("bad percent escape at byte {index} of the API path template")]
    BadPercentEscape {
        /// Byte offset of the `%`.
        index: usize,
    },
}

impl ApiPathTemplate {
    /// Parses and validates a template.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        if !template.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = template.char_indices().peekable();
        while let Some((index, character)) = chars.next() {
            match character {
                '{' => {
                    let rest = &template[index + 1..];
                    let Some(length) = rest.find('}') else {
                        return Err(TemplateError::UnclosedBrace { index });
                    };
                    let name = &rest[..length];
                    let piece = match name {
                        NAMESPACE_PLACEHOLDER => Piece::Namespace,
                        VMI_NAME_PLACEHOLDER => Piece::VmiName,
                        _ if name.contains('{') => {
                            return Err(TemplateError::UnclosedBrace { index });
                        }
                        _ => {
                            return Err(TemplateError::UnknownPlaceholder {
                                name: name.to_owned(),
                            });
                        }
                    };
                    if pieces.contains(&piece) {
                        return Err(TemplateError::RepeatedPlaceholder {
                            placeholder: name_of(&piece),
                        });
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    while chars.next_if(|&(i, _)| i <= index + 1 + length).is_some() {}
                }
                '}' => return Err(TemplateError::UnmatchedBrace { index }),
                '?' | '#' => return Err(TemplateError::QueryOrFragment { index }),
                '%' => {
                    let escape = template.as_bytes().get(index + 1..index + 3);
                    if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                        return Err(TemplateError::BadPercentEscape { index });
                    }
                    literal.push(character);
                }
                _ if is_path_character(character) => literal.push(character),
                _ => return Err(TemplateError::InvalidCharacter { character, index }),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        for (piece, placeholder) in [
            (Piece::Namespace, NAMESPACE_PLACEHOLDER),
            (Piece::VmiName, VMI_NAME_PLACEHOLDER),
        ] {
            if !pieces.contains(&piece) {
                return Err(TemplateError::MissingPlaceholder { placeholder });
            }
        }
        Ok(Self {
            source: template.to_owned(),
            pieces,
        })
    }

    /// Fills in the placeholders after checking both names against the Kubernetes name rules.
    pub fn render(&self, namespace: &str, vmi_name: &str) -> Result<String, InvalidNameError> {
        validate_namespace(namespace)?;
        validate_vmi_name(vmi_name)?;
        let mut path = String::with_capacity(self.source.len() + namespace.len() + vmi_name.len());
        for piece in &self.pieces {
            path.push_str(match piece {
                Piece::Literal(text) => text,
                Piece::Namespace => namespace,
                Piece::VmiName => vmi_name,
            });
        }
        Ok(path)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

fn name_of(piece: &Piece) -> &'static str {
    match piece {
        Piece::Namespace => NAMESPACE_PLACEHOLDER,
        _ => VMI_NAME_PLACEHOLDER,
    }
}

/// RFC 3986 `pchar` plus `/`: unreserved, sub-delims, `:` and `@` (`%` is handled separately).
fn is_path_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(character)
}

impl Default for ApiPathTemplate {
    fn default() -> Self {
        Self {
            source: DEFAULT_API_PATH.to_owned(),
            pieces: vec![
                Piece::Literal("/apis/subresources.kubevirt.io/v1alpha3/namespaces/".to_owned()),
                Piece::Namespace,
                Piece::Literal("/virtualmachineinstances/".to_owned()),
                Piece::VmiName,
                Piece::Literal("/vnc".to_owned()),
            ],
        }
    }
}

impl FromStr for ApiPathTemplate {
    type Err = TemplateError;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        Self::parse(template)
    }
}

impl fmt::Display for ApiPathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_parsing_the_default_path() {
        assert_eq!(
            ApiPathTemplate::parse(DEFAULT_API_PATH),
            Ok(ApiPathTemplate::default())
        );
    }

    #[test]
    fn renders_v1alpha3_and_v1_paths() {
        let v1alpha3 = ApiPathTemplate::default();
        assert_eq!(
            v1alpha3.render("lab", "vm-1").unwrap(),
            "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab/virtualmachineinstances/vm-1/vnc"
        );
        let v1 = ApiPathTemplate::parse(V1_API_PATH).unwrap();
        assert_eq!(
            v1.render("lab", "vm-1").unwrap(),
            "/apis/subresources.kubevirt.io/v1/namespaces/lab/virtualmachineinstances/vm-1/vnc"
        );
    }

    #[test]
    fn placeholders_may_sit_anywhere_in_any_order() {
        let template = ApiPathTemplate::parse("/x/{vmi_name}.{namespace}").unwrap();
        assert_eq!(template.render("ns", "vm").unwrap(), "/x/vm.ns");
    }

    #[test]
    fn rejects_malformed_templates() {
        let cases: [(&str, TemplateError); 11] = [
            ("apis/{namespace}/{vmi_name}", TemplateError::NotAbsolute),
            (
                "/{namespace}",
                TemplateError::MissingPlaceholder {
                    placeholder: "vmi_name",
                },
            ),
            (
                "/{vmi_name}",
                TemplateError::MissingPlaceholder {
                    placeholder: "namespace",
                },
            ),
            (
                "/{namespace}/{vmi_name}/{vmi_name}",
                TemplateError::RepeatedPlaceholder {
                    placeholder: "vmi_name",
                },
            ),
            (
                "/{namespace}/{vmi_name}/{name}",
                TemplateError::UnknownPlaceholder {
                    name: "name".to_owned(),
                },
            ),
            (
                "/{namespace}/{}/{vmi_name}",
                TemplateError::UnknownPlaceholder {
                    name: String::new(),
                },
            ),
            (
                "/{namespace}/{vmi_name",
                TemplateError::UnclosedBrace { index: 13 },
            ),
            (
                "/{namespace}}/{vmi_name}",
                TemplateError::UnmatchedBrace { index: 12 },
            ),
            (
                "/{namespace}/{vmi_name}?x=1",
                TemplateError::QueryOrFragment { index: 23 },
            ),
            (
                "/{namespace} /{vmi_name}",
                TemplateError::InvalidCharacter {
                    character: ' ',
                    index: 12,
                },
            ),
            (
                "/{namespace}/%zz/{vmi_name}",
                TemplateError::BadPercentEscape { index: 13 },
            ),
        ];
        for (template, expected) in cases {
            assert_eq!(
                ApiPathTemplate::parse(template),
                Err(expected),
                "{template}"
            );
        }
    }

    #[test]
    fn nested_brace_is_reported_as_unclosed() {
        assert_eq!(
            ApiPathTemplate::parse("/{name{space}/{vmi_name}"),
            Err(TemplateError::UnclosedBrace { index: 1 })
        );
    }

    #[test]
    fn percent_escapes_and_sub_delims_are_kept() {
        let template = ApiPathTemplate::parse("/a%2Fb/@:;/{namespace}/{vmi_name}").unwrap();
        assert_eq!(template.render("n", "v").unwrap(), "/a%2Fb/@:;/n/v");
        assert_eq!(template.to_string(), "/a%2Fb/@:;/{namespace}/{vmi_name}");
    }

    #[test]
    fn render_refuses_invalid_names() {
        let template = ApiPathTemplate::default();
        assert!(template.render("ns", "vm/../../x").is_err());
        assert!(template.render("NS", "vm").is_err());
        assert!(template.render("ns", "vm?preserveSession=false").is_err());
    }
}
