//! The gateway's shared state, assembled once at startup from the config:
//! router, authenticator, token issuer, proxy, store and account service.
//! Everything a request needs hangs off one `Arc<Gateway>`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::auth::jwt::{TokenIssuer, TokenVerifier};
use crate::auth::revocation::RevocationList;
use crate::auth::Authenticator;
use crate::body::ResponseBody;
use crate::config::secret::AccessSecret;
use crate::config::Config;
use crate::error::GatewayError;
use crate::path::DecidedPath;
use crate::proxy::Proxy;
use crate::router::Router;
use crate::service::Connection;

pub struct Gateway {
    config: Arc<Config>,
    router: Router,
    authenticator: Authenticator,
    issuer: TokenIssuer,
    proxy: Proxy,
    revocations: Arc<RevocationList>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid [server] identity_header_prefix: {0}")]
    IdentityPrefix(#[from] http::header::InvalidHeaderName),
}

impl Gateway {
    pub fn build(config: Config, secret: &AccessSecret) -> Result<Self, BuildError> {
        let revocations = Arc::new(RevocationList::default());
        let verifier = TokenVerifier::new(&config.tokens, secret);
        let issuer = TokenIssuer::new(&config.tokens, secret);
        let proxy = Proxy::new(
            &config.server.identity_header_prefix,
            config.server.body_read_timeout,
        )?;
        Ok(Self {
            router: Router::new(&config.routes),
            authenticator: Authenticator::new(verifier, Arc::clone(&revocations)),
            issuer,
            proxy,
            revocations,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    pub fn access_log(&self) -> bool {
        self.config.server.access_log
    }

    pub fn max_uri_bytes(&self) -> usize {
        self.config.server.max_uri_bytes
    }

    /// True for paths served by the account endpoints (`/auth` and below).
    pub fn is_account_path(&self, path: &str) -> bool {
        crate::router::prefix_matches(&self.config.auth.path_prefix, path)
    }

    /// The account endpoints.
    pub async fn accounts(
        &self,
        _request: Request<Incoming>,
        _path: &DecidedPath,
        _connection: Connection,
        _user: &mut Option<String>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        Err(GatewayError::NotFound)
    }
}
