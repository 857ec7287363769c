//! The caller of a protected route: an API key (`Bearer agk_…`) where the
//! route accepts them, an access token otherwise. A failed key is a guess:
//! it counts toward the client address's throttle, shared with logins.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use http::HeaderMap;

use crate::auth::api_keys::{self, key::is_api_key};
use crate::auth::token_memo::TokenMemo;
use crate::auth::{bearer, AuthError, Identity};
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::gateway::Gateway;

pub(super) fn authenticate(
    gateway: &Gateway,
    route: &RouteConfig,
    headers: &HeaderMap,
    client: IpAddr,
    tokens: &TokenMemo,
    now: SystemTime,
) -> Result<Identity, GatewayError> {
    let presented = bearer::presented(headers).map_err(AuthError::from)?;
    if !is_api_key(presented.as_bytes()) {
        return Ok(gateway
            .authenticator()
            .authenticate_presented(presented, now, tokens)?);
    }
    let key = presented.checked().map_err(AuthError::from)?;
    if !route.api_keys {
        return Err(GatewayError::ApiKeyNotAccepted);
    }
    let throttle = gateway.accounts().throttle();
    throttle.admit_address(client, Instant::now())?;
    api_keys::authenticate(gateway.api_keys(), gateway.revocations(), key, now).map_err(|err| {
        if err.is_guess() {
            throttle.address_failed(client, Instant::now());
        }
        GatewayError::from(err)
    })
}
