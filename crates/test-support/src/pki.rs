//! A test certificate authority and a server certificate it signed, made fresh with rcgen.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A test CA and a server certificate it signed for `127.0.0.1`, `::1` and `localhost`.
pub struct TestPki {
    /// The CA certificate, PEM: what a client trusts (the pod's `ca.crt`).
    pub ca_pem: String,
    /// The server certificate chain, PEM.
    pub server_chain_pem: String,
    /// The server's private key, PKCS #8 PEM.
    pub server_key_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A fresh CA called `ca_name` and a server certificate it signed.
    pub fn new(ca_name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_chain_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_chain: vec![server_cert.der().clone()],
            server_key: server_key.serialize_der(),
            issuer,
        }
    }

    /// A client certificate for `name` that this CA signed, and its key: (chain PEM, key PEM).
    pub fn client_identity(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// Writes the server certificate and key to `dir/tls.crt` and `dir/tls.key` (the names of a
    /// Kubernetes TLS Secret) and returns their paths.
    pub fn write_server_pair(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (
            crate::write_file(dir, "tls.crt", &self.server_chain_pem),
            crate::write_file(dir, "tls.key", &self.server_key_pem),
        )
    }

    /// A TLS acceptor (HTTP/1.1 ALPN) presenting the server certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    /// The server side TLS configuration (HTTP/1.1 ALPN) presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns the path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        crate::write_file(dir, "ca.crt", &self.ca_pem)
    }
}
