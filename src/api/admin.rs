//! Administration of users (role `admin` only): list, show, change role,
//! delete. Role changes and deletions take effect on the very next request.
//! Each is audited with the administrator as its actor.

use std::time::SystemTime;

use http::header::HeaderMap;
use http::{Response, StatusCode};

use super::request::parse_json;
use super::response::{json, no_content};
use super::views::{RoleChange, UserPage, UserView};
use super::Accounts;
use crate::account::Role;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::timestamp::unix_seconds;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

impl Accounts {
    /// `GET /users?limit=N&after=ID`: users ordered by id, one page at a time.
    pub(super) async fn list_users(
        &self,
        admin: &Identity,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let mut limit = DEFAULT_PAGE;
        let mut after = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("limit", value)) => {
                    limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or(GatewayError::BadRequest("limit must be between 1 and 500"))?;
                }
                Some(("after", value)) if !value.is_empty() => after = Some(value.to_owned()),
                _ => {}
            }
        }
        // One extra tells whether another page exists.
        let mut users = self
            .store
            .list_users(after.as_deref(), limit + 1)
            .await
            .map_err(GatewayError::internal)?;
        let more = users.len() > limit;
        users.truncate(limit);
        let page = UserPage {
            next_after: if more {
                users.last().map(|u| u.id.clone())
            } else {
                None
            },
            users: users.iter().map(UserView::from).collect(),
        };
        self.audit
            .record(
                AuditEvent::new(AuditKind::AdminListUsers, SystemTime::now())
                    .actor(admin.user_id.as_str()),
            )
            .await;
        json(StatusCode::OK, &page)
    }

    pub(super) async fn show_user(
        &self,
        admin: &Identity,
        id: &str,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let user = self
            .store
            .user_by_id(id)
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::UserNotFound)?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::AdminShowUser, SystemTime::now())
                    .user(&user.id)
                    .email(&user.email)
                    .actor(admin.user_id.as_str()),
            )
            .await;
        json(StatusCode::OK, &UserView::from(&user))
    }

    pub(super) async fn change_role(
        &self,
        admin: &Identity,
        id: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let change: RoleChange = parse_json(headers, body)?;
        let role = Role::parse(&change.role)?;
        let user = self
            .store
            .set_role(id, role.as_str())
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::UserNotFound)?;
        // The version bump kills every token carrying the old role; a refresh
        // mints one with the new role.
        self.revocations
            .set_min_version(&user.id, user.token_version);
        // The user's API keys are capped by the new role from now on.
        self.api_keys.set_owner_role(&user.id, &role);
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::RoleChange, SystemTime::now())
                    .user(&user.id)
                    .email(&user.email)
                    .actor(admin.user_id.as_str())
                    .detail(&user.role),
            )
            .await;
        json(StatusCode::OK, &UserView::from(&user))
    }

    pub(super) async fn delete_user(
        &self,
        admin: &Identity,
        id: &str,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let deleted = self
            .store
            .delete_user(id, unix_seconds(SystemTime::now()))
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::UserNotFound)?;
        self.revocations.delete_user(&deleted.id);
        self.api_keys.owner_deleted(&deleted.id);
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::UserDeletion, SystemTime::now())
                    .user(&deleted.id)
                    .email(&deleted.email)
                    .actor(admin.user_id.as_str()),
            )
            .await;
        Ok(no_content())
    }
}
