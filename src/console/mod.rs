//! `eventfleet console`: the operator console. A listener of its own (never the public ingress port) serving
//! server-rendered HTML (maud) with a little htmx, every asset embedded in the binary. It reads and acts through
//! the same ports as the CLI, so it works on either backend.
//!
//! - [`auth`]: who the operator is (token and session cookie, ALB OIDC, or loopback).
//! - [`csrf`]: the CSRF cookie and the one form extractor every POST goes through.
//! - [`page`]: the page frame and shared bits of markup.
//! - [`status`], [`events`], [`dlq`], [`hooks`]: one module per page; [`replays`]: the replay of retained
//!   events found on the events page; [`jobs`]: replays running in the background; [`redact`]: envelopes shown only as far as they are safe.

mod auth;
mod csrf;
mod dlq;
mod events;
mod hooks;
mod jobs;
mod page;
mod redact;
mod replays;
mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::{FromRequestParts, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use eventfleet_storage::Store;
use maud::html;

use self::auth::{Access, Denied, SESSION_COOKIE, SESSION_SECS};
use self::csrf::{CsrfToken, Form};
use crate::config::Config;

/// What every handler shares.
pub struct App {
    store: Store,
    /// The configuration (the routes a search or a replay names).
    config: Arc<Config>,
    access: Access,
    jobs: jobs::Jobs,
    status: status::StatusCache,
    /// Base of printed hook URLs.
    hook_base: String,
}

type Shared = Arc<App>;

/// Runs the console until SIGTERM or Ctrl-C.
pub async fn run(config: Config, data_dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let addr = listen.unwrap_or(config.console.listen);
    let access = access(&config, addr)?;
    crate::backend::require_store(&config, data_dir)?;
    let opened = crate::backend::open_with_metrics(&config, data_dir, None).await?;
    let rates = match &opened.aws {
        Some(aws) => status::Rates::cloudwatch(&config, aws),
        None => status::Rates::Audit,
    };
    let hook_base = crate::commands::hooks::hook_base(&config, data_dir);
    let app = Arc::new(App {
        store: opened.store.clone(),
        config: Arc::new(config.clone()),
        access,
        jobs: jobs::Jobs::default(),
        status: status::StatusCache::new(rates),
        hook_base,
    });
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}"))?;
    let local = listener.local_addr()?;
    let how = match &app.access {
        Access::Token { .. } => "log in with EVENTFLEET_CONSOLE_TOKEN",
        Access::AlbOidc => "operators signed in by the ALB (authenticate-oidc)",
        Access::Loopback { .. } => "loopback only, no token",
    };
    println!("console listening on http://{local}  ({how})");
    tracing::info!(%local, access = ?app.access, "console listening");
    let shutdown = crate::shutdown::on_signal();
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("console server")?;
    opened.flush().await;
    Ok(ExitCode::SUCCESS)
}

/// The access the configuration gives for this address: a token wherever one is set; otherwise the ALB's
/// identity when trusted; otherwise loopback only.
fn access(config: &Config, addr: SocketAddr) -> anyhow::Result<Access> {
    let console = &config.console;
    if let Some(token) = &console.token {
        return Ok(Access::token(token.expose()));
    }
    if console.trust_alb_oidc {
        return Ok(Access::AlbOidc);
    }
    if !addr.ip().is_loopback() {
        bail!(
            "the console listens on {addr}, beyond loopback: set EVENTFLEET_CONSOLE_TOKEN (or, behind an ALB with \
             authenticate-oidc, EVENTFLEET_CONSOLE_TRUST_ALB_OIDC=true)"
        );
    }
    let user = std::env::var("USER").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| "operator".into());
    Ok(Access::Loopback { operator: auth::clean_name(&format!("{user}@localhost")) })
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(status::page))
        .route("/status/panel", get(status::panel))
        .route("/events", get(events::page))
        .route("/events/preview", post(replays::preview))
        .route("/events/replay", post(replays::replay))
        .route("/events/replays/{id}", get(replays::progress))
        .route("/events/replays/{id}/panel", get(replays::progress_panel))
        .route("/events/replays/{id}/cancel", post(replays::cancel))
        .route("/dlq", get(dlq::page))
        .route("/dlq/preview", post(dlq::preview))
        .route("/dlq/replay", post(dlq::replay))
        .route("/dlq/purge", post(dlq::purge))
        .route("/dlq/replays/{id}", get(dlq::progress))
        .route("/dlq/replays/{id}/panel", get(dlq::progress_panel))
        .route("/hooks", get(hooks::page).post(hooks::create))
        .route("/hooks/{id}/enable", post(hooks::enable))
        .route("/hooks/{id}/disable", post(hooks::disable))
        .route("/hooks/{id}/messages", post(hooks::messages))
        .route("/login", get(login_page).post(login))
        // For the load balancer's and the container's health checks: no operator needed, nothing revealed.
        .route("/health", get(|| async { "ok" }))
        .route("/logout", post(logout))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/console.css", get(css))
        .route("/favicon.ico", get(icon))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn(csrf::issue))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// No framing, no inline script or style, nothing cached: the pages hold event data.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the browser reached us over HTTPS (directly or through the ALB): cookies are then `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn now_secs(app: &App) -> i64 {
    app.store.clock.now().as_millis() / 1000
}

/// The operator of a request; pages without one send the browser to the login form.
pub struct Operator {
    /// Who.
    pub name: String,
    /// Whether the console's own session (token mode) identifies them, which they can end ("log out"); not so
    /// on loopback or behind the ALB's sign-in.
    pub has_session: bool,
}

impl Operator {
    /// What the console's audit lines say did it.
    fn actor(&self) -> String {
        format!("{} (console)", self.name)
    }
}

impl FromRequestParts<Shared> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        match app.access.operator(&parts.headers, now_secs(app)) {
            Ok(name) => Ok(Operator { name, has_session: matches!(app.access, Access::Token { .. }) }),
            Err(Denied::NoSession) if parts.method == Method::GET && !parts.headers.contains_key("hx-request") => {
                Err(Redirect::to("/login").into_response())
            }
            Err(Denied::NoSession) => {
                Err((StatusCode::UNAUTHORIZED, "not logged in: open /login and log in again").into_response())
            }
            Err(Denied::NoAlbIdentity) => Err((
                StatusCode::UNAUTHORIZED,
                "no ALB identity on this request: the console trusts the ALB's authenticate-oidc, reach it through \
                 the ALB",
            )
                .into_response()),
        }
    }
}

async fn login_page(State(app): State<Shared>, Extension(csrf): Extension<CsrfToken>) -> Response {
    match app.access {
        Access::Token { .. } => page::login(&csrf, None).into_response(),
        _ => Redirect::to("/").into_response(),
    }
}

async fn login(
    State(app): State<Shared>,
    headers: HeaderMap,
    Extension(csrf): Extension<CsrfToken>,
    form: Form,
) -> Response {
    if !matches!(app.access, Access::Token { .. }) {
        return Redirect::to("/").into_response();
    }
    if !app.access.token_matches(form.get("token").unwrap_or_default()) {
        tracing::warn!("console login refused: wrong token");
        return (StatusCode::UNAUTHORIZED, page::login(&csrf, Some("That token is not the console's.")))
            .into_response();
    }
    let name = auth::clean_name(form.get("name").unwrap_or("operator"));
    let name = if name.is_empty() { "operator".to_owned() } else { name };
    let expires = now_secs(&app) + SESSION_SECS;
    let Some(session) = app.access.session(&name, expires) else {
        return Redirect::to("/").into_response();
    };
    tracing::info!(operator = %name, "console login");
    let secure = if is_https(&headers) { "; Secure" } else { "" };
    let cookie =
        format!("{SESSION_COOKIE}={session}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

async fn logout(_form: Form) -> Response {
    let mut response = Redirect::to("/login").into_response();
    let gone = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/htmx.min.js"))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn icon() -> Response {
    asset("image/svg+xml", include_str!("assets/icon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// A store error as a page: the operator sees what failed, the log has it too.
fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: store unavailable");
    (StatusCode::SERVICE_UNAVAILABLE, html! { p.error { "The store did not answer: " (e) } }).into_response()
}
