//! `/api-keys`: create (shown once), list (never a secret), revoke. Each
//! change is durable before it is answered, enters the in-memory index at
//! once, and is audited. Admins list anyone's keys (`?user=ID`) and revoke
//! any key.

use std::time::{Duration, SystemTime};

use http::header::HeaderMap;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::request::parse_json;
use super::response::{json, no_content};
use super::views::rfc3339;
use super::Accounts;
use crate::account::Role;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::api_keys::index::may_carry;
use crate::auth::api_keys::{key, session_of};
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::config::ConfigDuration;
use crate::error::GatewayError;
use crate::store::{hex, ApiKeyRecord, StoreError};
use crate::timestamp::unix_seconds;

const MAX_NAME_CHARS: usize = 100;
/// The longest `expiresIn`: ten years.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(3_650 * 86_400);
const ADMIN: &str = "admin";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewApiKey {
    name: String,
    role: Option<String>,
    expires_in: Option<ExpiresIn>,
}

/// Seconds, or a duration such as `"90d"` (as in the config file).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Seconds(u64),
    Text(String),
}

/// A key as listed: everything but the secret (and its hash).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyView {
    id: String,
    name: String,
    role: String,
    user_id: String,
    /// RFC 3339, UTC, like every time here.
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(key: &ApiKeyRecord) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.clone(),
            user_id: key.user_id.clone(),
            created_at: rfc3339(key.created_at),
            expires_at: key.expires_at.map(rfc3339),
            last_used_at: key.last_used_at.map(rfc3339),
            revoked_at: key.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
struct CreatedKey {
    /// The key itself: in this answer only, never again.
    key: String,
    #[serde(flatten)]
    view: ApiKeyView,
}

#[derive(Debug, Serialize)]
struct KeyList {
    keys: Vec<ApiKeyView>,
}

impl Accounts {
    /// `POST /api-keys {name, role?, expiresIn?}`. The role defaults to the
    /// caller's own; anything but that or the default role is 403.
    pub(super) async fn create_api_key(
        &self,
        caller: &Identity,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let request: NewApiKey = parse_json(headers, body)?;
        let name = parse_name(&request.name)?;
        let requested = request.role.as_deref().map(Role::parse).transpose()?;
        let now = SystemTime::now();
        let now_secs = unix_seconds(now);
        let expires_at = request
            .expires_in
            .map(|expires_in| parse_expires_in(&expires_in).map(|d| now_secs + d.as_secs()))
            .transpose()?;
        // The owner's role as stored now, not as the token was minted.
        let owner = self
            .store
            .user_by_id(caller.user_id.as_str())
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::TokenRevoked)?;
        let owner_role = Role::parse(&owner.role)?;
        let role = requested.unwrap_or_else(|| owner_role.clone());
        if !may_carry(&role, &owner_role, self.api_keys.default_role()) {
            return Err(GatewayError::ApiKeyRoleTooHigh);
        }
        let new_key = key::generate().map_err(GatewayError::internal)?;
        let record = ApiKeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: owner.id.clone(),
            name,
            role: role.as_str().to_owned(),
            hash: hex(&new_key.hash),
            created_at: now_secs,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        match self.store.create_api_key(&record).await {
            Ok(()) => {}
            Err(StoreError::UnknownUser(_)) => return Err(GatewayError::TokenRevoked),
            Err(err) => return Err(GatewayError::internal(err)),
        }
        self.flush().await?;
        self.api_keys.insert(&record, owner_role.as_str());
        self.audit
            .record(
                AuditEvent::new(AuditKind::ApiKeyCreated, now)
                    .user(&owner.id)
                    .email(&owner.email)
                    .detail(&record.id),
            )
            .await;
        json(
            StatusCode::CREATED,
            &CreatedKey {
                key: new_key.text,
                view: ApiKeyView::from(&record),
            },
        )
    }

    /// `GET /api-keys`: the caller's keys; `?user=ID` another's (admins).
    pub(super) async fn list_api_keys(
        &self,
        caller: &Identity,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let user = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "user")
            .map(|(_, value)| value);
        let user = match user {
            Some(user) if user != caller.user_id.as_str() => {
                if caller.role.as_str() != ADMIN {
                    return Err(GatewayError::Forbidden);
                }
                user
            }
            _ => caller.user_id.as_str(),
        };
        let keys = self
            .store
            .user_api_keys(user)
            .await
            .map_err(GatewayError::internal)?;
        json(
            StatusCode::OK,
            &KeyList {
                keys: keys.iter().map(ApiKeyView::from).collect(),
            },
        )
    }

    /// `DELETE /api-keys/{id}`: refused at once, here and (through the
    /// feed) on every instance. Someone else's key is 404 unless admin.
    pub(super) async fn revoke_api_key(
        &self,
        caller: &Identity,
        id: &str,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let key = self
            .store
            .api_key(id)
            .await
            .map_err(GatewayError::internal)?
            .filter(|key| key.user_id == caller.user_id.as_str() || caller.role.as_str() == ADMIN)
            .ok_or(GatewayError::ApiKeyNotFound)?;
        let now = SystemTime::now();
        let now_secs = unix_seconds(now);
        self.store
            .revoke_api_key(&key.id, now_secs)
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::ApiKeyNotFound)?;
        self.api_keys.remove(&key.id);
        // Live tunnels opened with it end now too.
        self.revocations.revoke_session(
            &session_of(&key.id),
            now_secs.saturating_add(self.revocation_window.as_secs()),
        );
        self.flush().await?;
        let mut event = AuditEvent::new(AuditKind::ApiKeyRevoked, now)
            .user(&key.user_id)
            .detail(&key.id);
        if key.user_id != caller.user_id.as_str() {
            event = event.actor(caller.user_id.as_str());
        }
        self.audit.record(event).await;
        Ok(no_content())
    }
}

fn parse_name(name: &str) -> Result<String, GatewayError> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(GatewayError::InvalidKeyName);
    }
    Ok(name.to_owned())
}

fn parse_expires_in(expires_in: &ExpiresIn) -> Result<Duration, GatewayError> {
    let duration = match expires_in {
        ExpiresIn::Seconds(seconds) => Duration::from_secs(*seconds),
        ExpiresIn::Text(text) => {
            ConfigDuration::parse(text)
                .map_err(|_| GatewayError::InvalidExpiry)?
                .0
        }
    };
    if duration < Duration::from_secs(1) || duration > MAX_EXPIRES_IN {
        return Err(GatewayError::InvalidExpiry);
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_expiries_are_checked() {
        assert!(parse_name("ci deploy").is_ok());
        assert!(parse_name(&"n".repeat(100)).is_ok());
        for bad in ["", "a\nb", &"n".repeat(101)] {
            assert!(matches!(parse_name(bad), Err(GatewayError::InvalidKeyName)));
        }
        let secs = |e: ExpiresIn| parse_expires_in(&e).map(|d| d.as_secs());
        assert_eq!(secs(ExpiresIn::Seconds(60)).unwrap(), 60);
        assert_eq!(secs(ExpiresIn::Text("90d".into())).unwrap(), 90 * 86_400);
        for bad in [
            ExpiresIn::Seconds(0),
            ExpiresIn::Seconds(3_651 * 86_400),
            ExpiresIn::Text("soon".into()),
            ExpiresIn::Text("500ms".into()),
        ] {
            assert!(matches!(
                parse_expires_in(&bad),
                Err(GatewayError::InvalidExpiry)
            ));
        }
    }
}
