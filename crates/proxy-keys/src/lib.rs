//! The keys and certificates a running proxy serves with, kept current without a restart: the
//! token keys ([`KeyRing`]: a secret file, public key files, a JWK Set file and a JWK Set URL)
//! and the `wss://` certificate of the console port ([`ServerTls`]). Both re-read their files
//! when they change (a Kubernetes Secret volume swaps a symlink, cert-manager rewrites in place)
//! and keep the last good value when a change does not load. The admin API's bearer token
//! ([`AdminToken`]) is read the same way.
//!
//! Token verification itself is [`proxy_auth`]'s; this crate only decides *which* verifier is
//! current. A changed key file takes effect for the next token:
//!
//! ```
//! use proxy_auth::{TokenVerifier as _, Verifier};
//! use proxy_keys::KeyRing;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let directory = std::env::temp_dir().join(format!("proxy-keys-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&directory)?;
//! let secret = directory.join("secret-key");
//! std::fs::write(&secret, "first-secret")?;
//! let file = secret.clone();
//! let keys = KeyRing::from_files(vec![secret.clone()], move || {
//!     Verifier::hs256(std::fs::read_to_string(&file).unwrap_or_default().trim())
//! })?;
//! assert_eq!(keys.files(), [secret]);
//! let _verifier = keys.current(); // the verifier for the next token
//! # std::fs::remove_dir_all(&directory)?;
//! # Ok(())
//! # }
//! ```
pub mod admin_token;
mod file_watch;
pub mod jwks_url;
pub mod keys;
pub mod tls;

pub use admin_token::{AdminToken, AdminTokenError};
pub use file_watch::Reload;
pub use jwks_url::{JwksFetchError, JwksUrl, JwksUrlError};
pub use keys::{KeyMetrics, KeyRing, KeyRingError};
pub use tls::{ServerTls, TlsError, TlsFiles};
