//! A throw-away CA and a server certificate for `127.0.0.1`, `::1` and `localhost`, made at start.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::{self, ServerConfig, pki_types::PrivateKeyDer};

use crate::SimError;

/// The generated CA (PEM, for clients to trust) and the server side TLS configuration.
pub(crate) struct GeneratedTls {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<ServerConfig>,
}

pub(crate) fn generate() -> Result<GeneratedTls, SimError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubevirt-sim test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kubevirt-sim");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SimError::TlsConfig)?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .map_err(SimError::TlsConfig)?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // As kube-apiserver (Go's crypto/tls) does: stateless tickets, one per connection.
    server_config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(SimError::TlsConfig)?;
    server_config.send_tls13_tickets = 1;
    Ok(GeneratedTls {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(server_config),
    })
}
