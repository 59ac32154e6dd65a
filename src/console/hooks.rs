//! Hooks: the registry listed, a hook created (its URL and secret shown once), enabled, disabled.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use eventfleet_schema::{HookId, HookKind, Webhook};
use maud::html;

use super::csrf::{CsrfToken, Form};
use super::page::{self, Section};
use super::{Operator, Shared, store_error};

/// `GET /hooks`.
pub async fn page(State(app): State<Shared>, operator: Operator, Extension(csrf): Extension<CsrfToken>) -> Response {
    let hooks = match app.store.webhooks.list().await {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let body = html! {
        table #hooks {
            thead { tr { th { "Name" } th { "Channel" } th { "Kind" } th { "State" } th { "Calls" } th { "URL" } th {} } }
            tbody {
                @for h in &hooks {
                    tr data-hook-id=(h.id) {
                        td { (h.name) }
                        td { code { (h.channel) } }
                        td { (h.kind.as_str()) }
                        td.state { @if h.active { "enabled" } @else { span.muted { "disabled" } } }
                        td.num { (h.invocation_count) }
                        td { code { (app.hook_base) "/hooks/" (h.id) } }
                        td {
                            form method="post" action={"/hooks/" (h.id) (if h.active { "/disable" } else { "/enable" })} {
                                (page::csrf_field(&csrf))
                                button type="submit" { (if h.active { "Disable" } else { "Enable" }) }
                            }
                        }
                    }
                }
            }
        }
        @if hooks.is_empty() { p.muted { "No hooks yet." } }
        h2 { "Create a hook" }
        form.create method="post" action="/hooks" {
            (page::csrf_field(&csrf))
            label { "Name" input type="text" name="name" required; }
            label { "Slack channel" input type="text" name="channel" placeholder="#alerts" required; }
            label { "Kind"
                select name="kind" { option value="info" { "info" } option value="alert" { "alert" } }
            }
            label.check { input type="checkbox" name="secret" value="yes" checked; " Signed: senders sign with the secret as X-Hub-Signature-256 (GitHub's webhook secret)" }
            button type="submit" { "Create" }
        }
    };
    page::frame("Hooks", Section::Hooks, &operator, &csrf, body).into_response()
}

/// `POST /hooks`: creates one and shows its secret, the only time it is shown.
pub async fn create(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    form: Form,
) -> Response {
    let kind = if form.get("kind") == Some("alert") { HookKind::Alert } else { HookKind::Info };
    let hook = match crate::commands::hooks::new_hook(
        form.get("name").unwrap_or_default(),
        form.get("channel").unwrap_or_default(),
        kind,
        form.get("secret") == Some("yes"),
        None,
        operator.actor(),
        app.store.clock.now(),
    ) {
        Ok(h) => h,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, html! { p.error { (e) } }).into_response(),
    };
    if let Err(e) = app.store.webhooks.create(&hook).await {
        return store_error(e);
    }
    tracing::info!(operator = %operator.name, hook = %hook.id, "console: hook created");
    let body = created(&app, &hook);
    page::frame("Hook created", Section::Hooks, &operator, &csrf, body).into_response()
}

fn created(app: &Shared, hook: &Webhook) -> maud::Markup {
    html! {
        section #hook-created {
            p.lead { "Hook " strong { (hook.name) } " posts to " code { (hook.channel) } "." }
            dl {
                dt { "URL" } dd { code #hook-url { (app.hook_base) "/hooks/" (hook.id) } }
                @if let Some(secret) = &hook.secret {
                    dt { "Secret" } dd { code #hook-secret { (secret) } }
                }
            }
            @if hook.secret.is_some() { p.warn { "Copy the secret now: it is not shown again." } }
            a href="/hooks" { "Back to hooks" }
        }
    }
}

/// `POST /hooks/{id}/enable`.
pub async fn enable(State(app): State<Shared>, operator: Operator, Path(id): Path<String>, _form: Form) -> Response {
    set_active(&app, &operator, &id, true).await
}

/// `POST /hooks/{id}/disable`.
pub async fn disable(State(app): State<Shared>, operator: Operator, Path(id): Path<String>, _form: Form) -> Response {
    set_active(&app, &operator, &id, false).await
}

async fn set_active(app: &Shared, operator: &Operator, id: &str, active: bool) -> Response {
    match app.store.webhooks.set_active(&HookId::from_raw(id), active).await {
        Ok(h) => {
            tracing::info!(operator = %operator.name, hook = %h.id, active, "console: hook state changed");
            Redirect::to("/hooks").into_response()
        }
        Err(e) => store_error(e),
    }
}
