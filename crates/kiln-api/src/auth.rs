//! Bearer-token authentication with scopes, as an extractor: a handler that takes
//! `Auth<JobsWrite>` runs only for a live token carrying `jobs:write` (or `admin`). No or
//! unknown token is 401, a token without the scope 403, both as JSON errors.
//!
//! Verified tokens are cached in the process for [`CACHE_TTL`], so the hot enqueue path does
//! not pay a database round trip per request; revoking through this process drops the entry
//! at once, and other API processes notice within the TTL.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, StatusCode};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::tokens::{self, Scope};
use crate::AppState;

/// How long a verified token is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

/// A scope a route requires, as a type.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

macro_rules! scope_marker {
    ($(#[$m:meta])* $name:ident = $scope:expr) => {
        $(#[$m])*
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = $scope;
        }
    };
}
scope_marker!(
    /// Requires `jobs:read`.
    JobsRead = Scope::JobsRead
);
scope_marker!(
    /// Requires `jobs:write`.
    JobsWrite = Scope::JobsWrite
);
scope_marker!(
    /// Requires `admin`.
    Admin = Scope::Admin
);

/// Proof that the request carried a live token with scope `S`.
pub struct Auth<S> {
    /// The token's id.
    pub token_id: i64,
    /// Whether the token carries `admin` (which implies every scope).
    pub admin: bool,
    _scope: PhantomData<S>,
}

/// A verified token: id, scopes, when it was checked.
type Verified = (i64, Vec<Scope>, Instant);

/// Tokens verified recently, by hash.
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], Verified>>,
}

impl TokenCache {
    fn get(&self, hash: &[u8; 32]) -> Option<(i64, Vec<Scope>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, _, at)| at.elapsed() < CACHE_TTL)
            .map(|(id, scopes, _)| (*id, scopes.clone()))
    }

    fn put(&self, hash: [u8; 32], id: i64, scopes: Vec<Scope>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, (_, _, at)| at.elapsed() < CACHE_TTL);
        }
        if entries.len() < CACHE_MAX {
            entries.insert(hash, (id, scopes, Instant::now()));
        }
    }

    /// Forgets a token (after revoking it).
    pub fn forget(&self, hash: &[u8; 32]) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
    }
}

/// The bearer token of a request, or a 401 saying what is wrong.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token").field("Authorization"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header").field("Authorization"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("expected `Authorization: Bearer <token>`").field("Authorization")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized("expected `Authorization: Bearer <token>`").field("Authorization"));
    }
    Ok(token.trim())
}

impl<S: RequiredScope> FromRequestParts<AppState> for Auth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let hash = tokens::hash_token(token);
        let (id, scopes) = match state.tokens.get(&hash) {
            Some(hit) => hit,
            None => {
                let found = tokens::lookup(&state.pool, &hash).await.map_err(|e| match e {
                    tokens::TokenError::Database(db) => ApiError::from(db),
                    e => ApiError::internal("token lookup", e),
                })?;
                let (id, scopes) = found.ok_or_else(|| {
                    ApiError::unauthorized("unknown or revoked token").field("Authorization")
                })?;
                state.tokens.put(hash, id, scopes.clone());
                (id, scopes)
            }
        };
        if scopes.contains(&S::SCOPE) || scopes.contains(&Scope::Admin) {
            Ok(Auth {
                token_id: id,
                admin: scopes.contains(&Scope::Admin),
                _scope: PhantomData,
            })
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token lacks the `{}` scope", S::SCOPE),
            )
            .field("Authorization"))
        }
    }
}
