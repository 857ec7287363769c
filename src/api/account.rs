//! The self-service endpoints: register, login, refresh, logout, logout-all,
//! me and password change.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderMap;
use http::{Response, StatusCode};

use super::request::{cookie, parse_json, parse_optional_json};
use super::response::{clear_session_cookies, json, no_content, set_session_cookies};
use super::views::{Credentials, PasswordChange, RefreshBody, SessionView, UserView};
use super::Accounts;
use crate::account::new_password::MAX_PASSWORD_BYTES;
use crate::account::{Email, NewPassword};
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::password::PasswordError;
use crate::auth::sessions::cookies::REFRESH_COOKIE;
use crate::auth::sessions::{csrf_matches, IssuedSession, SessionError};
use crate::auth::throttle::AccountKey;
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::config::Registration;
use crate::error::GatewayError;
use crate::store::{StoreError, User};
use crate::timestamp::unix_seconds;

const CSRF_HEADER: &str = "x-csrf-token";

impl Accounts {
    pub(super) async fn register(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        if self.settings.registration == Registration::Closed {
            return Err(GatewayError::RegistrationClosed);
        }
        let credentials: Credentials = parse_json(headers, body)?;
        let session = self.sign_up(credentials, peer).await?;
        self.session_response(StatusCode::CREATED, &session)
    }

    /// Registration, for `/auth/register` and the browser sign-up page
    /// alike: the account is created and its first session started. The
    /// caller has checked that registration is open.
    pub(crate) async fn sign_up(
        &self,
        credentials: Credentials,
        peer: IpAddr,
    ) -> Result<IssuedSession, GatewayError> {
        if self.settings.registration == Registration::Closed {
            return Err(GatewayError::RegistrationClosed);
        }
        let email = Email::parse(&credentials.email)?;
        let password = NewPassword::parse(credentials.password)?;
        // Counted once it is valid enough to cost a hash, taken or not.
        self.throttle.admit_registration(peer, Instant::now())?;
        // Hash before looking at the email index, so a taken address costs
        // the same work (and time) as a free one.
        let hash = self
            .passwords
            .hash(password.into_string())
            .await
            .map_err(|err| {
                if matches!(err, PasswordError::Busy) {
                    // Turned away before any work: not held against the address.
                    self.throttle.refund_registration(peer);
                }
                super::password_error(err)
            })?;
        let now = SystemTime::now();
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.into_string(),
            role: self.settings.default_role.as_str().to_owned(),
            password_hash: hash,
            created_at: unix_seconds(now),
            token_version: 0,
        };
        match self.store.create_user(&user).await {
            Ok(()) => {}
            Err(StoreError::EmailTaken) => return Err(GatewayError::EmailTaken),
            Err(err) => return Err(GatewayError::internal(err)),
        }
        let session = self.sessions.start(user, now).await?;
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::Registration, now)
                    .user(&session.user.id)
                    .email(&session.user.email),
            )
            .await;
        Ok(session)
    }

    pub(super) async fn login(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<(Response<ResponseBody>, String), GatewayError> {
        let credentials: Credentials = parse_json(headers, body)?;
        let session = self.sign_in(credentials, peer).await?;
        let user_id = session.user.id.clone();
        Ok((self.session_response(StatusCode::OK, &session)?, user_id))
    }

    /// The password check and session start behind `/auth/login` and the
    /// browser sign-in page alike: one throttle, one lockout, one hashing
    /// pool, one answer for an unknown email and a wrong password, and the
    /// same audit events.
    pub(crate) async fn sign_in(
        &self,
        credentials: Credentials,
        peer: IpAddr,
    ) -> Result<IssuedSession, GatewayError> {
        // Before any argon2 work or store lookup, so a locked account
        // answers the same whether it exists and whatever the password. The
        // attempt is reported below; an early return (busy pool, store
        // error) drops it, counting as neither failure nor success.
        let attempt = self.throttle.admit_login(
            AccountKey::from_input(&credentials.email),
            peer,
            Instant::now(),
        )?;
        // Instances sharing the store share lockouts: one earned elsewhere
        // holds here too (the attempt is dropped, counting as neither).
        let shared_key = self
            .store
            .shared()
            .then(|| *AccountKey::from_input(&credentials.email).as_bytes());
        self.refuse_while_shared_locked(shared_key.as_ref()).await?;
        // Not a new password, but the same cap on argon2 work.
        if credentials.password.len() > MAX_PASSWORD_BYTES {
            return Err(GatewayError::PasswordTooLong);
        }
        // An address that cannot be canonical cannot be registered either:
        // answer exactly as for an unknown account.
        let email = Email::parse(&credentials.email).ok();
        let user = match &email {
            Some(email) => self
                .store
                .user_by_email(email.as_str())
                .await
                .map_err(GatewayError::internal)?,
            None => None,
        };
        let Some(user) = user else {
            // Same argon2 work as a real check, so timing tells nothing.
            self.passwords
                .verify_dummy(credentials.password)
                .await
                .map_err(super::password_error)?;
            let locked = attempt.failed(Instant::now());
            self.shared_failure(shared_key.as_ref()).await;
            self.audit_login_failure(None, email.as_ref().map(Email::as_str), locked, None)
                .await;
            return Err(GatewayError::InvalidCredentials);
        };
        let verdict = self
            .passwords
            .verify(credentials.password.clone(), user.password_hash.clone())
            .await
            .map_err(super::password_error)?;
        if !verdict.matches {
            let locked = attempt.failed(Instant::now());
            self.shared_failure(shared_key.as_ref()).await;
            self.audit_login_failure(Some(&user.id), Some(&user.email), locked, None)
                .await;
            return Err(GatewayError::InvalidCredentials);
        }
        attempt.succeeded();
        self.shared_success(shared_key.as_ref()).await;
        let mut user = user;
        if verdict.needs_rehash {
            // Parameters were raised since this hash was made: upgrade it now
            // that the password is at hand. A busy pool just postpones it.
            // Only over the hash just verified: a password change committed
            // meanwhile wins (and the session below is then refused).
            if let Ok(hash) = self.passwords.hash(credentials.password).await {
                match self
                    .store
                    .set_password(&user.id, &user.password_hash, &hash, false)
                    .await
                {
                    // Only the hash: the session below must still be
                    // checked against the version this login read.
                    Ok(Some(updated)) => user.password_hash = updated.password_hash,
                    Ok(None) | Err(StoreError::UserChanged(_)) => {}
                    Err(err) => tracing::error!(error = %err, "storing a rehashed password failed"),
                }
            }
        }
        let session = self.sessions.start(user, SystemTime::now()).await?;
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::LoginSuccess, SystemTime::now())
                    .user(&session.user.id)
                    .email(&session.user.email),
            )
            .await;
        Ok(session)
    }

    /// Refuses, with the lockout's end, while the account is locked in the
    /// shared store (earned on any instance); the caller's attempt is then
    /// dropped, counting as neither failure nor success.
    async fn refuse_while_shared_locked(&self, key: Option<&[u8; 32]>) -> Result<(), GatewayError> {
        let Some(key) = key else { return Ok(()) };
        let now = unix_seconds(SystemTime::now());
        match self
            .store
            .account_locked_until(key, now)
            .await
            .map_err(GatewayError::internal)?
        {
            Some(until) => Err(GatewayError::TooManyRequests {
                retry_after: Duration::from_secs(until.saturating_sub(now)),
            }),
            None => Ok(()),
        }
    }

    /// Clears the account's failures in the shared store, when there is
    /// one. A failure to clear is logged, never turned into an answer.
    async fn shared_success(&self, key: Option<&[u8; 32]>) {
        let Some(key) = key else { return };
        if let Err(err) = self.store.account_succeeded(key).await {
            tracing::warn!(error = %err, "clearing the shared login failures failed");
        }
    }

    /// Counts a failed login in the shared store, when there is one. A
    /// failure to count is logged, never turned into a different answer.
    async fn shared_failure(&self, key: Option<&[u8; 32]>) {
        let Some(key) = key else { return };
        let now = unix_seconds(SystemTime::now());
        match self
            .store
            .account_failed(key, &self.settings.lockout, now)
            .await
        {
            Ok(Some(until)) => tracing::info!(
                locked_for = until.saturating_sub(now),
                "account locked for every instance after repeated failed logins"
            ),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "counting a shared login failure failed"),
        }
    }

    pub(super) async fn refresh(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        // Counted before any store work, whatever the token turns out to be.
        self.sessions.admit_refresh(peer)?;
        let presented = self
            .presented_refresh_token(headers, body)?
            .ok_or(GatewayError::InvalidRefreshToken)?;
        let rotated = self.sessions.rotate(&presented, SystemTime::now()).await;
        if matches!(rotated, Err(SessionError::Reused)) {
            self.audit_session(AuditKind::RefreshReuseDetected, &presented)
                .await;
        }
        self.session_response(StatusCode::OK, &rotated?)
    }

    pub(super) async fn logout(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let presented =
            self.presented_refresh_token(headers, body)?
                .ok_or(GatewayError::BadRequest(
                    "no refresh token in the body or cookie",
                ))?;
        // Unknown tokens log out nothing but still clear the cookies: logout
        // answers the same whatever the token was.
        if let Some(family) = self.sessions.family_of(&presented).await? {
            self.sessions
                .revoke_family(&family, unix_seconds(SystemTime::now()))
                .await?;
            self.audit_session(AuditKind::Logout, &presented).await;
        }
        let mut response = no_content();
        clear_session_cookies(&mut response, &self.settings.path_prefix);
        Ok(response)
    }

    pub(super) async fn logout_all(
        &self,
        identity: &Identity,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let now = unix_seconds(SystemTime::now());
        let user = self
            .store
            .bump_token_version(identity.user_id.as_str())
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::TokenRevoked)?;
        self.revocations
            .set_min_version(&user.id, user.token_version);
        self.sessions
            .revoke_user_sessions(&user.id, None, now)
            .await?;
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::LogoutAll, SystemTime::now())
                    .user(&user.id)
                    .email(&user.email),
            )
            .await;
        let mut response = no_content();
        clear_session_cookies(&mut response, &self.settings.path_prefix);
        Ok(response)
    }

    pub(super) async fn me(
        &self,
        identity: &Identity,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let user = self
            .store
            .user_by_id(identity.user_id.as_str())
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::TokenRevoked)?;
        json(StatusCode::OK, &UserView::from(&user))
    }

    pub(super) async fn change_password(
        &self,
        identity: &Identity,
        headers: &HeaderMap,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let change: PasswordChange = parse_json(headers, body)?;
        if change.current_password.len() > MAX_PASSWORD_BYTES {
            return Err(GatewayError::PasswordTooLong);
        }
        let new_password = NewPassword::parse(change.new_password)?;
        let user = self
            .store
            .user_by_id(identity.user_id.as_str())
            .await
            .map_err(GatewayError::internal)?
            .ok_or(GatewayError::TokenRevoked)?;
        // A wrong current password is a guess at the account's password,
        // with a token instead of an email: it counts against the same
        // account and address limits as a login, so a stolen access token
        // buys no more guesses than the login form.
        let attempt =
            self.throttle
                .admit_login(AccountKey::from_input(&user.email), peer, Instant::now())?;
        // And against the lockout instances sharing the store share, read
        // and fed as the login does.
        let shared_key = self
            .store
            .shared()
            .then(|| *AccountKey::from_input(&user.email).as_bytes());
        self.refuse_while_shared_locked(shared_key.as_ref()).await?;
        let verdict = self
            .passwords
            .verify(change.current_password, user.password_hash.clone())
            .await
            .map_err(super::password_error)?;
        if !verdict.matches {
            let locked = attempt.failed(Instant::now());
            self.shared_failure(shared_key.as_ref()).await;
            self.audit_login_failure(
                Some(&user.id),
                Some(&user.email),
                locked,
                Some("password change"),
            )
            .await;
            return Err(GatewayError::InvalidCredentials);
        }
        attempt.succeeded();
        self.shared_success(shared_key.as_ref()).await;
        let hash = self
            .passwords
            .hash(new_password.into_string())
            .await
            .map_err(super::password_error)?;
        // Over the hash just verified only: of two changes racing with the
        // same current password, the second finds it no longer current.
        let user = match self
            .store
            .set_password(&user.id, &user.password_hash, &hash, true)
            .await
        {
            Ok(Some(user)) => user,
            Ok(None) => return Err(GatewayError::TokenRevoked),
            Err(StoreError::UserChanged(_)) => return Err(GatewayError::InvalidCredentials),
            Err(err) => return Err(GatewayError::internal(err)),
        };
        // Every older access token dies, and every session but this one.
        self.revocations
            .set_min_version(&user.id, user.token_version);
        self.sessions
            .revoke_user_sessions(
                &user.id,
                identity.session.as_deref(),
                unix_seconds(SystemTime::now()),
            )
            .await?;
        self.flush().await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::PasswordChange, SystemTime::now())
                    .user(&user.id)
                    .email(&user.email),
            )
            .await;
        Ok(no_content())
    }

    /// The refresh token from the JSON body, or else from the cookie — and a
    /// cookie is accepted only with the matching `X-CSRF-Token` header.
    fn presented_refresh_token(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<String>, GatewayError> {
        let parsed: RefreshBody = parse_optional_json(headers, body)?;
        if let Some(token) = parsed.refresh_token {
            return Ok(Some(token));
        }
        let Some(token) = cookie(headers, REFRESH_COOKIE) else {
            return Ok(None);
        };
        let presented_csrf = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if presented_csrf.is_empty() || !csrf_matches(token, presented_csrf) {
            return Err(GatewayError::CsrfFailed);
        }
        Ok(Some(token.to_owned()))
    }

    fn session_response(
        &self,
        status: StatusCode,
        session: &IssuedSession,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let mut response = json(status, &SessionView::from(session))?;
        set_session_cookies(
            &mut response,
            &self.settings.path_prefix,
            &session.refresh_token,
            &session.csrf_token,
            session.refresh_max_age,
        );
        Ok(response)
    }
}
