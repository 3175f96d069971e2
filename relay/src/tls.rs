//! The relay's TLS identity and both ends' QUIC configurations. The relay makes a self-signed
//! certificate once and keeps it; the node tells providers that exact certificate, and a
//! provider trusts nothing else (the certificate is pinned, so no CA is involved).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::wire::{ALPN, SERVER_NAME};

/// A relay's certificate and private key (DER).
#[derive(Clone)]
pub struct Identity {
    /// The certificate providers pin.
    pub certificate: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// A TLS or QUIC setting that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making or reading the certificate failed.
    #[error("relay certificate: {0}")]
    Certificate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Reading or writing the identity file failed.
    #[error("relay identity file: {0}")]
    Io(#[from] std::io::Error),
}

fn config_error(error: impl std::fmt::Display) -> TlsError {
    TlsError::Config(error.to_string())
}

impl Identity {
    /// A new self-signed identity for [`SERVER_NAME`].
    pub fn generate() -> Result<Self, TlsError> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Self {
            certificate: made.cert.der().to_vec(),
            key: made.signing_key.serialize_der(),
        })
    }

    /// The identity kept at `path`, made and kept there the first time (the file holds the
    /// certificate's and the key's lengths and bytes; it is the relay's secret).
    pub fn load_or_generate(path: &Path) -> Result<Self, TlsError> {
        if let Ok(bytes) = std::fs::read(path) {
            return Self::decode(&bytes)
                .ok_or_else(|| TlsError::Certificate(format!("{} is damaged", path.display())));
        }
        let identity = Self::generate()?;
        let mut bytes = Vec::new();
        for part in [&identity.certificate, &identity.key] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, path)?;
        Ok(identity)
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut parts = Vec::new();
        for _ in 0..2 {
            let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            parts.push(bytes.get(4..4 + length)?.to_vec());
            bytes = &bytes[4 + length..];
        }
        let key = parts.pop()?;
        let certificate = parts.pop()?;
        Some(Self { certificate, key })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How long a connection may go silent before it is considered gone, and how often the
/// provider pings to stay well inside it (and inside NAT mappings, which often last 30 s).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);

fn transport(incoming_streams: u32) -> Result<quinn::TransportConfig, TlsError> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(config_error)?));
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_concurrent_bidi_streams(incoming_streams.into());
    transport.max_concurrent_uni_streams(0u8.into());
    Ok(transport)
}

/// The relay's QUIC server configuration: providers open only the control stream.
pub(crate) fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(identity.certificate.clone())],
            key,
        )
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(1)?));
    Ok(config)
}

/// A provider's QUIC client configuration: trusts the one pinned certificate, accepts up to
/// `max_streams` concurrent requester streams from the relay.
pub(crate) fn client_config(
    certificate: &[u8],
    max_streams: u32,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certificate.to_vec()))
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(max_streams)?));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.identity");
        let made = Identity::load_or_generate(&path).expect("made");
        let read = Identity::load_or_generate(&path).expect("read");
        assert_eq!(made.certificate, read.certificate);
        assert_eq!(made.key, read.key);
        std::fs::write(&path, b"\0\0\0\x09short").expect("damage");
        assert!(Identity::load_or_generate(&path).is_err());
    }
}
