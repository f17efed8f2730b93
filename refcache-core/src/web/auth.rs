//! Who asks: the principal of a request (an auth layer's, a token's) or the browser's own session, as the actor
//! every handler acts as.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::WebError;
use super::state::WebRefCache;
use crate::model::actor::{Actor, ActorKind};

/// The cookie `POST /login` sets to the token.
pub(super) const TOKEN_COOKIE: &str = "refcache_token";
/// The cookie of a browser's own session, when no tokens are configured.
const SESSION_COOKIE: &str = "refcache_session";

/// The actor a request acts as, put into its extensions by [`identify`].
#[derive(Debug, Clone)]
pub(super) struct Caller(pub(super) Actor);

/// Finds the caller, or answers `401`; a new browser session gets its cookie on the way out. The login form and
/// the assets need no caller.
pub(super) async fn identify(
    State(web): State<WebRefCache>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let open = path == "/login" || path.starts_with("/assets/");
    let api = path.starts_with("/api/");
    if let Err(e) = same_origin(&web, &request) {
        return if api {
            e.into_response()
        } else {
            super::html::error_page(&e)
        };
    }
    match caller(&web, &request) {
        Ok(Some(actor)) => {
            request.extensions_mut().insert(Caller(actor));
            next.run(request).await
        }
        Ok(None) => {
            // No tokens, no principal: the browser's session, new if it has none (or a forged one).
            let id = uuid::Uuid::new_v4().simple().to_string();
            request.extensions_mut().insert(Caller(browser_actor(&id)));
            let mut response = next.run(request).await;
            let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(_) if open => next.run(request).await,
        Err(e) if api => e.into_response(),
        Err(e) => super::html::unauthorized(&e),
    }
}

/// The caller of `request`: `Ok(None)` for a browser without a session yet (only when no tokens are set).
fn caller(web: &WebRefCache, request: &Request) -> Result<Option<Actor>, WebError> {
    if let Some(actor) = request.extensions().get::<Actor>() {
        return match actor.id {
            Some(_) => Ok(Some(actor.as_principal(ActorKind::User))),
            None => Err(WebError::Unauthorized),
        };
    }
    let headers = request.headers();
    if let Some(tokens) = &web.tokens {
        let token = bearer(headers).or_else(|| cookie(headers, TOKEN_COOKIE));
        return match token.and_then(|t| tokens.get(t)) {
            Some(principal) => Ok(Some(principal.as_principal(ActorKind::User))),
            None => Err(WebError::Unauthorized),
        };
    }
    Ok(cookie(headers, SESSION_COOKIE)
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(browser_actor))
}

/// The CSRF defence: a request that changes something (any method but `GET`, `HEAD`, `OPTIONS`) and does not
/// carry a bearer token (the cookies of `/login` and of a browser session are sent by the browser whoever made the
/// page that asks) must come from this server's own page. Browsers say so with `Sec-Fetch-Site: same-origin`, or
/// with an `Origin` that names this server's `Host` (or one of [`WebRefCache::with_origin`]'s); a browser never
/// sends a bearer token on its own, so a request with one needs neither.
fn same_origin(web: &WebRefCache, request: &Request) -> Result<(), WebError> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return Ok(());
    }
    let headers = request.headers();
    if bearer(headers).is_some() {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    let origin = text(header::ORIGIN);
    let allowed = |origin: &str| web.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return if site == "same-origin" || origin.is_some_and(allowed) {
            Ok(())
        } else {
            Err(WebError::CrossSite {
                why: format!("it was sent with `Sec-Fetch-Site: {site}`"),
            })
        };
    }
    let Some(origin) = origin else {
        return Err(WebError::CrossSite {
            why: "it has neither an `Origin` nor a `Sec-Fetch-Site` header".to_owned(),
        });
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ if allowed(origin) => Ok(()),
        _ => Err(WebError::CrossSite {
            why: format!(
                "its `Origin` is `{}`, not this server (`Host: {}`)",
                crate::model::excerpt::excerpt(origin, 100),
                crate::model::excerpt::excerpt(host.unwrap_or(""), 100)
            ),
        }),
    }
}

/// A browser's own session: an anonymous user in session `web:<id>`.
fn browser_actor(id: &str) -> Actor {
    Actor::anonymous_user().with_session(format!("web:{id}"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The value of cookie `name`, if the request sent it.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `token` is one of the configured tokens (for the login form).
pub(super) fn known_token(web: &WebRefCache, token: &str) -> bool {
    web.tokens.as_ref().is_some_and(|t| t.contains_key(token))
}
