//! Submitter authentication: team routes (`/v1/runs*`) need `Authorization: Bearer TOKEN`, a
//! token made by `kiln admin token create --team NAME`, in plain and TLS mode alike.
//!
//! [`require_team`] resolves the token to a [`Team`] request extension; handlers then answer
//! only for that team's runs, and another team's run is `404` like an unknown one, so that run
//! ids do not leak. Deliberately absent: roles within a team, per-token scopes.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::error::ApiError;

/// The team a request was authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Team(pub String);

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware of the team routes: `401` without a known, unexpired bearer token; otherwise the
/// request carries its [`Team`].
pub async fn require_team(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(&req) else {
        return unauthorized(
            "team routes need `Authorization: Bearer TOKEN`; \
             pass --token or KILN_TOKEN (made by `kiln admin token create --team NAME`)",
        );
    };
    let team = match app
        .controller()
        .state()
        .team_of_token(token, app.now())
        .await
    {
        Ok(Ok(team)) => team,
        Ok(Err(refusal)) => return unauthorized(&refusal.to_string()),
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    tracing::debug!(%team, "team request");
    req.extensions_mut().insert(Team(team));
    next.run(req).await
}
