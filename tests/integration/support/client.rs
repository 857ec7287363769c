//! A real TLS client that trusts the test CA and speaks HTTP/1.1 or HTTP/2
//! (chosen by ALPN), one fresh connection per request unless a test keeps
//! one (`TestClient::keep_alive`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::body::Zeros;

#[derive(Clone)]
pub struct TestClient {
    addr: SocketAddr,
    ca_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
}

impl TestClient {
    pub fn new(addr: SocketAddr, ca_pem: String) -> Self {
        Self { addr, ca_pem }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connector(&self, alpn: Alpn) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
        };
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS handshake that may fail (a certificate the client does not trust).
    pub async fn try_tls(&self, alpn: Alpn) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        self.connector(alpn).connect(name, tcp).await
    }

    /// A TLS connection with the given ALPN, for raw-bytes tests.
    pub async fn tls(&self, alpn: Alpn) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        self.connector(alpn).connect(name, tcp).await.unwrap()
    }

    /// One keep-alive HTTP/1.1 connection, for tests whose requests must
    /// share it (as a client that sends the same token on every request).
    pub async fn keep_alive(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tls = self.tls(Alpn::Http1).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: RequestBody::Empty,
            alpn: Alpn::Http1,
            host: Some("localhost".to_owned()),
        }
    }
}

enum RequestBody {
    Empty,
    Bytes(Bytes),
    Zeros(u64),
}

pub struct RequestBuilder {
    client: TestClient,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: RequestBody,
    alpn: Alpn,
    host: Option<String>,
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    pub fn json(mut self, value: &Value) -> Self {
        self.body = RequestBody::Bytes(Bytes::from(value.to_string()));
        self.header("content-type", "application/json")
    }

    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        self.body = RequestBody::Bytes(bytes.into());
        self
    }

    /// A generated body of `len` zero bytes, streamed.
    pub fn zeros(mut self, len: u64) -> Self {
        self.body = RequestBody::Zeros(len);
        self
    }

    pub fn http2(mut self) -> Self {
        self.alpn = Alpn::Http2;
        self
    }

    /// Sends the request and collects the whole response.
    pub async fn send(self) -> Response {
        let (response, version) = self.send_streaming().await;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        Response {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
            version,
        }
    }

    /// Sends the request and returns the response with its body unread.
    pub async fn send_streaming(self) -> (http::Response<hyper::body::Incoming>, Version) {
        let tls = self.client.tls(self.alpn).await;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let body = match self.body {
            RequestBody::Empty => Either::Left(Either::Left(Empty::<Bytes>::new())),
            RequestBody::Bytes(b) => Either::Left(Either::Right(Full::new(b))),
            RequestBody::Zeros(n) => Either::Right(Zeros::new(n)),
        };
        let mut builder = Request::builder().method(self.method.clone());
        let version = match negotiated.as_deref() {
            Some(b"h2") => {
                let authority = self.host.clone().unwrap_or_else(|| "localhost".to_owned());
                builder = builder.uri(format!("https://{authority}{}", self.path));
                Version::HTTP_2
            }
            _ => {
                builder = builder.uri(self.path.as_str());
                if let Some(host) = &self.host {
                    builder = builder.header("host", host);
                }
                Version::HTTP_11
            }
        };
        let mut request = builder.body(body).unwrap();
        for (name, value) in self.headers {
            request.headers_mut().append(name, value);
        }
        let response = if version == Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        };
        (response, version)
    }
}

/// A collected response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailers, when the response carried any.
    pub trailers: Option<HeaderMap>,
    pub version: Version,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The `error` code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestClient {
    /// Writes `request` verbatim on a fresh HTTP/1.1 TLS connection and reads
    /// until the server closes it or `limit` passes; returns what came back.
    pub async fn raw(&self, request: &[u8], limit: std::time::Duration) -> RawExchange {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = self.tls(Alpn::Http1).await;
        tls.write_all(request).await.unwrap();
        tls.flush().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let closed = loop {
            match tokio::time::timeout(limit, tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        RawExchange {
            text: String::from_utf8_lossy(&received).into_owned(),
            closed,
        }
    }
}

/// What a raw exchange returned.
#[derive(Debug)]
pub struct RawExchange {
    pub text: String,
    /// The server closed the connection (rather than the read timing out).
    pub closed: bool,
}

impl RawExchange {
    /// Status codes of every response in the stream, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text
            .split("HTTP/1.1 ")
            .skip(1)
            .filter_map(|rest| rest.get(..3))
            .filter_map(|code| code.parse().ok())
            .collect()
    }
}
