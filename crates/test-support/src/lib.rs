//! Helpers the workspace's test suites share, so that each suite tests its own crate and not a
//! copy of a helper: a test PKI ([`TestPki`]), loopback TCP pairs ([`tcp_pair`]), deterministic
//! payloads ([`pattern`], [`checksums::Payloads`]), checksummed two-way exchanges
//! ([`checksums::exchange`]), console tokens ([`mint_console_token`]) an HTTPS document
//! server ([`https_file::HttpsFileServer`]) and a reader of session recordings ([`playback`]).
//!
//! Test tooling: no production crate depends on it (CI checks the `ws-proxy` binary's tree).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! let (mut accepted, mut connected) = test_support::tcp_pair().await;
//! let data = test_support::pattern(100, 7);
//! connected.write_all(&data).await.unwrap();
//! let mut received = vec![0; 100];
//! accepted.read_exact(&mut received).await.unwrap();
//! assert_eq!(received, data);
//! # }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod checksums;
pub mod https_file;
pub mod impair;
pub mod netns;
mod pki;
pub mod playback;
pub mod process;
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pki::TestPki;
use tokio::net::{TcpListener, TcpStream};

/// Two ends of one TCP connection on 127.0.0.1: (accepted, connected).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(address));
    (accepted.unwrap().0, connected.unwrap())
}

/// `len` deterministic bytes that differ per `seed` (a period of 251, so no power-of-two
/// boundary lines up with it).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// `len` pseudo-random bytes (xorshift64), the same for the same `seed`: data no compressor can
/// shrink.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `contents` to `dir/name` and returns the path (token and CA files of a pod's shape).
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A LabOrchestrator console token for user 5 in lab 1, signed HS256 with `secret`, allowing
/// `vms` in `namespace` under `lab_instance_id`, valid for `lifetime` from now.
pub fn mint_console_token(
    secret: &str,
    namespace: &str,
    lab_instance_id: i64,
    vms: &[&str],
    lifetime: Duration,
) -> String {
    let lab = proxy_auth::LabInstance::new(1, lab_instance_id, namespace, vms.iter().copied());
    let key = proxy_auth::SigningKey::hs256(secret).unwrap();
    proxy_auth::issue(5, lab, proxy_auth::Expiry::In(lifetime), &key).unwrap()
}
