//! The pair kept for the reuse grace across instances, as sealed bytes:
//! a retry that lands on another instance opens it with the token it
//! presents and answers with the same pair.

use serde::{Deserialize, Serialize};

use super::IssuedSession;
use crate::auth::claims::AccessClaims;
use crate::auth::jwt::MintedToken;
use crate::auth::sealed_pair;

/// What a retry on another instance needs to answer with the same pair.
#[derive(Serialize, Deserialize)]
struct Body {
    family_id: String,
    access_token: String,
    access_expires_in: u64,
    claims: AccessClaims,
    refresh_token: String,
    refresh_expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SealedError {
    #[error("cannot encode the pair: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Seal(#[from] sealed_pair::SealError),
}

pub(super) fn seal(
    presented: &str,
    issued: &IssuedSession,
    refresh_expires_at: u64,
) -> Result<Vec<u8>, SealedError> {
    let body = Body {
        family_id: issued.family_id.clone(),
        access_token: issued.access.token.clone(),
        access_expires_in: issued.access.expires_in.as_secs(),
        claims: issued.access.claims.clone(),
        refresh_token: issued.refresh_token.clone(),
        refresh_expires_at,
    };
    Ok(sealed_pair::seal(presented, &serde_json::to_vec(&body)?)?)
}

pub(super) fn open(
    presented: &str,
    sealed: &[u8],
) -> Result<(String, MintedToken, String, u64), SealedError> {
    let body: Body = serde_json::from_slice(&sealed_pair::open(presented, sealed)?)?;
    let access = MintedToken {
        token: body.access_token,
        expires_in: std::time::Duration::from_secs(body.access_expires_in),
        claims: body.claims,
    };
    Ok((
        body.family_id,
        access,
        body.refresh_token,
        body.refresh_expires_at,
    ))
}
