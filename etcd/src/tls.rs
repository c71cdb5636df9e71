//! TLS (rustls, ring) for `https://` URLs: the server configurations from etcd's client flags (`--cert-file`,
//! `--key-file`, `--trusted-ca-file`, `--client-cert-auth`) and peer flags (`--peer-*`), the accept loop that
//! serves a router over TLS with ALPN `h2` and `http/1.1`, client configurations (a CA file, the system's CA
//! bundle, or no verification), and a connector that dials `http://` and `https://` URLs for tonic and hyper.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client-side TLS flags, as given.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFlags {
    /// `--cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`.
    pub client_cert_auth: bool,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM data.
    #[error("{flag} {path}: {why}")]
    File {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The flags do not fit together.
    #[error("{0}")]
    Flags(String),
    /// rustls refused the certificates or key.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::File {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The names of one set of TLS flags, for messages.
struct Names {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
    auth: &'static str,
}

const CLIENT_NAMES: Names = Names {
    cert: "--cert-file",
    key: "--key-file",
    ca: "--trusted-ca-file",
    auth: "--client-cert-auth",
};

const PEER_NAMES: Names = Names {
    cert: "--peer-cert-file",
    key: "--peer-key-file",
    ca: "--peer-trusted-ca-file",
    auth: "--peer-client-cert-auth",
};

/// The rustls server configuration for the client URLs, or `None` without `--cert-file`.
pub fn server_config(f: &ClientTlsFlags) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    server_config_named(f, &CLIENT_NAMES)
}

/// The certificate chain and key of `--cert-file`/`--key-file` (or the peer ones), `None` without both.
fn identity(
    f: &ClientTlsFlags,
    n: &Names,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    let (cert_file, key_file) = match (&f.cert_file, &f.key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(TlsError::Flags(format!(
                "{} and {} go together",
                n.cert, n.key
            )));
        }
    };
    let chain = certs(n.cert, cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
        flag: n.key,
        path: key_file.clone(),
        why: e.to_string(),
    })?;
    Ok(Some((chain, key)))
}

fn server_config_named(
    f: &ClientTlsFlags,
    n: &Names,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let Some((chain, key)) = identity(f, n)? else {
        if f.client_cert_auth {
            return Err(TlsError::Flags(format!(
                "{} needs {} and {}",
                n.auth, n.cert, n.key
            )));
        }
        return Ok(None);
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if f.client_cert_auth {
        let Some(ca) = &f.trusted_ca_file else {
            return Err(TlsError::Flags(format!("{} needs {}", n.auth, n.ca)));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(n.ca, ca)? {
            roots.add(c)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Flags(format!("{}: {e}", n.ca)))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// TLS on the peer URLs: what the peer port serves, and what this member presents and trusts when it dials
/// `https://` peers.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// For the `https://` peer listeners (`--peer-cert-file`, `--peer-client-cert-auth`).
    pub server: Arc<rustls::ServerConfig>,
    /// For outgoing peer connections: verifies peers against `--peer-trusted-ca-file` (else the system's CA
    /// bundle, as etcd does) and presents `--peer-cert-file` as the client certificate.
    pub client: Arc<rustls::ClientConfig>,
}

/// The peer TLS configuration from the `--peer-*` flags, or `None` without `--peer-cert-file`;
/// `skip_verify` (`--peer-auto-tls`: the peers' certificates are self-signed too) trusts any peer.
pub fn peer_config(f: &ClientTlsFlags, skip_verify: bool) -> Result<Option<PeerTls>, TlsError> {
    let Some(server) = server_config_named(f, &PEER_NAMES)? else {
        return Ok(None);
    };
    let trust = match &f.trusted_ca_file {
        _ if skip_verify => Trust::Insecure,
        Some(ca) => Trust::Ca(ca, PEER_NAMES.ca),
        None => Trust::System,
    };
    let identity = identity(f, &PEER_NAMES)?;
    let client = client_config(&trust, identity, &[b"h2"])?;
    Ok(Some(PeerTls { server, client }))
}

/// A proxy's TLS towards `https://` members, as etcd's proxy builds it: the client TLS files (`--cert-file`
/// presented, `--trusted-ca-file` trusted), or the peer ones when no client file is given; `None` without any.
/// With `--auto-tls` (`client_auto`) the members are not verified, as etcd's proxy does not.
pub fn proxy_client_config(
    client: &ClientTlsFlags,
    peer: &ClientTlsFlags,
    client_auto: bool,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let given = |f: &ClientTlsFlags| {
        f.cert_file.is_some() || f.key_file.is_some() || f.trusted_ca_file.is_some()
    };
    let (f, names) = if given(client) {
        (client, &CLIENT_NAMES)
    } else if given(peer) {
        (peer, &PEER_NAMES)
    } else {
        return Ok(None);
    };
    let trust = match &f.trusted_ca_file {
        _ if client_auto => Trust::Insecure,
        Some(ca) => Trust::Ca(ca, names.ca),
        None => Trust::System,
    };
    client_config(&trust, identity(f, names)?, &[b"http/1.1"]).map(Some)
}

/// etcd's self-signed certificate for `--auto-tls` (`<data-dir>/fixtures/client`) and `--peer-auto-tls`
/// (`<data-dir>/fixtures/peer`): `cert.pem` and `key.pem` in `dir`, kept from an earlier start if both are
/// there, else made for `hosts` (IP addresses or DNS names) valid for a year (etcd's choice; ECDSA P-256
/// where etcd uses P-521, which ring does not sign with). Returns (certificate, key) paths.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let fail = |path: &Path, why: String| TlsError::File {
        flag: "--auto-tls",
        path: path.to_path_buf(),
        why,
    };
    let gen_err = |e: rcgen::Error| fail(dir, format!("generating a certificate: {e}"));
    let pair = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    // Peers present it as a client certificate too.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let issued = params.self_signed(&pair).map_err(gen_err)?;
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
    std::fs::write(&cert, issued.pem()).map_err(|e| fail(&cert, e.to_string()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // The key is for this member's eyes only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| fail(&key, e.to_string()))?;
        f.write_all(pair.serialize_pem().as_bytes())
            .map_err(|e| fail(&key, e.to_string()))?;
    }
    Ok((cert, key))
}

/// Whom a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The CA certificates in this PEM file (named by this flag in messages).
    Ca(&'a Path, &'static str),
    /// The system's CA bundle (as Go's `crypto/x509` finds it).
    System,
    /// Nobody is checked (`--insecure-skip-tls-verify`).
    Insecure,
}

/// Where Go's `crypto/x509` looks for the system's CA bundle on Linux, in its order.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's CA certificates (`SSL_CERT_FILE` first, as Go honours it); empty if there is no bundle, so
/// that every server fails verification rather than none.
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let found = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    if let Some(path) = found
        && let Ok(iter) = CertificateDer::pem_file_iter(&path)
    {
        // A bundle may hold a certificate rustls cannot parse; the others still count.
        let (added, skipped) = roots.add_parsable_certificates(iter.filter_map(Result::ok));
        tracing::debug!(path = %path.display(), added, skipped, "system CA bundle");
    }
    roots
}

/// A rustls client configuration: `trust` for the server, `identity` (chain and key) as the client
/// certificate, offering `alpn`.
pub fn client_config(
    trust: &Trust<'_>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Ca(path, flag) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(flag, path)? {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::System => builder.with_root_certificates(system_roots()),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))),
    };
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client certificate and key from PEM files (`flags`: the flag names, for messages).
pub fn client_identity(
    cert: &Path,
    key: &Path,
    flags: (&'static str, &'static str),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs(flags.0, cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        flag: flags.1,
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok((chain, key))
}

/// `--insecure-skip-tls-verify`: any server certificate is accepted; the handshake signatures are still
/// checked, so the connection is at least encrypted to whoever holds the presented key.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection made by [`Connector`]: plain TCP for `http://`, TLS for `https://`.
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for Stream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Dials `http://` URLs over TCP and `https://` ones over TLS with its client configuration (the server name
/// checked is the URL's host, an IP address or a DNS name), for tonic channels and hyper clients.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    /// Bounds the TCP connect and the handshake together.
    timeout: Option<Duration>,
}

impl Connector {
    /// A connector using `tls` for `https://` URLs.
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Option<Duration>) -> Connector {
        Connector { tls, timeout }
    }

    async fn dial(tls: Arc<rustls::ClientConfig>, uri: Uri) -> io::Result<Stream> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {why}"));
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        // Small gRPC frames must not wait for delayed ACKs.
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(host).map_err(|e| bad(&e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl tower::Service<Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.timeout);
        Box::pin(async move {
            let dial = Connector::dial(tls, uri);
            let stream = match timeout {
                Some(t) => tokio::time::timeout(t, dial)
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??,
                None => dial.await?,
            };
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("accepting a client connection: {e}");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // As on the plain listeners: small gRPC frames must not wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "rejected a TLS connection: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "client connection: {e}");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
