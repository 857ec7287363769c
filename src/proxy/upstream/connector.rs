//! Opens a connection to one target: TCP with Nagle off under a connect
//! timeout, then, for `https://`, a rustls handshake with SNI and certificate
//! verification (always on) and the route's ALPN protocol checked.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::io::UpstreamIo;
use crate::config::upstream::Target;
use crate::config::UpstreamProtocol;

/// Longest wait for a TCP connection plus TLS handshake, unless the route's
/// own deadline comes first.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why no connection to a target was made. Nothing was sent in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect failed: {0}")]
    Tcp(#[source] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("connect did not complete in time")]
    Timeout,
    #[error("the target did not agree to HTTP/2 (ALPN h2)")]
    NoH2,
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

/// Everything needed to reach one target.
pub(crate) struct Connector {
    /// `host:port` as given to the resolver.
    address: String,
    /// The TLS settings and the name checked against the certificate;
    /// `None` for `http://`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    protocol: UpstreamProtocol,
}

impl Connector {
    /// `tls` is the route's client config, required for `https://` targets.
    pub(crate) fn new(
        target: &Target,
        protocol: UpstreamProtocol,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let host = target.authority.host();
        let port = target
            .authority
            .port_u16()
            .unwrap_or(if target.is_https() { 443 } else { 80 });
        // IPv6 literals keep their brackets in `host:port` but not in SNI.
        let address = format!("{host}:{port}");
        let tls = match (target.is_https(), tls) {
            (false, _) => None,
            (true, None) => return Err("https target without TLS settings".to_owned()),
            (true, Some(config)) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(bare.to_owned())
                    .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
                Some((TlsConnector::from(Arc::clone(config)), name))
            }
        };
        Ok(Self {
            address,
            tls,
            protocol,
        })
    }

    /// Connects and handshakes, giving up at `deadline` or after
    /// [`CONNECT_TIMEOUT`], whichever is first.
    pub(crate) async fn connect(&self, deadline: Instant) -> Result<UpstreamIo, ConnectError> {
        let deadline = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        tokio::time::timeout_at(deadline, self.connect_inner())
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    async fn connect_inner(&self) -> Result<UpstreamIo, ConnectError> {
        let tcp = TcpStream::connect(self.address.as_str())
            .await
            .map_err(ConnectError::Tcp)?;
        tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let Some((connector, name)) = &self.tls else {
            return Ok(UpstreamIo::Plain(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(ConnectError::Tls)?;
        if self.protocol == UpstreamProtocol::Http2
            && tls.get_ref().1.alpn_protocol() != Some(b"h2")
        {
            return Err(ConnectError::NoH2);
        }
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }
}
