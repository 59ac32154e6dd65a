//! Hooks: the registry listed, a hook created (its URL and secret shown once), enabled, disabled, and how it posts
//! GitHub runs, deployments and pull requests (one living message each, or a message per delivery).

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use eventfleet_schema::{HookId, HookKind, Webhook};
use eventfleet_storage::StorageError;
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
            thead { tr { th { "Name" } th { "Channel" } th { "Kind" } th { "State" } th { "GitHub messages" } th { "Calls" } th { "URL" } th {} } }
            tbody {
                @for h in &hooks {
                    tr data-hook-id=(h.id) {
                        td { (h.name) }
                        td { code { (h.channel) } }
                        td { (h.kind.as_str()) }
                        td.state { @if h.active { "enabled" } @else { span.muted { "disabled" } } }
                        td.messages {
                            form method="post" action={"/hooks/" (h.id) "/messages"} {
                                (page::csrf_field(&csrf))
                                @if h.per_delivery {
                                    "one per delivery "
                                    input type="hidden" name="messages" value="living";
                                    button type="submit" title="One message per run, deployment or pull request, updated in place" { "Make living" }
                                } @else {
                                    "living "
                                    input type="hidden" name="messages" value="per-delivery";
                                    button type="submit" title="A message for every delivery, as GitHub sends them" { "One per delivery" }
                                }
                            }
                        }
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
            label { "Channel (Slack, Teams or both: #alerts+teams:oncall)" input type="text" name="channel" placeholder="#alerts" required; }
            label { "Kind"
                select name="kind" { option value="info" { "info" } option value="alert" { "alert" } }
            }
            label.check { input type="checkbox" name="secret" value="yes" checked; " Signed: senders sign with the secret as X-Hub-Signature-256 (GitHub's webhook secret)" }
            label.check { input type="checkbox" name="per_delivery" value="yes"; " GitHub: a message per delivery (by default a workflow run, a deployment or a pull request is one message, updated in place)" }
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
    let mut hook = match crate::commands::hooks::new_hook(
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
    hook.per_delivery = form.get("per_delivery") == Some("yes");
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
        Err(StorageError::NotFound(_)) => no_such_hook(id),
        Err(e) => store_error(e),
    }
}

fn no_such_hook(id: &str) -> Response {
    (axum::http::StatusCode::NOT_FOUND, html! { p.error { "No hook " code { (id) } "." } }).into_response()
}

/// `POST /hooks/{id}/messages`: `messages=living` or `messages=per-delivery`.
pub async fn messages(State(app): State<Shared>, operator: Operator, Path(id): Path<String>, form: Form) -> Response {
    let per_delivery = match form.get("messages") {
        Some("living") => false,
        Some("per-delivery") => true,
        other => {
            let said = other.unwrap_or("nothing");
            let answer = html! { p.error { "messages must be living or per-delivery, not " code { (said) } } };
            return (axum::http::StatusCode::BAD_REQUEST, answer).into_response();
        }
    };
    match app.store.webhooks.set_per_delivery(&HookId::from_raw(&id), per_delivery).await {
        Ok(h) => {
            tracing::info!(operator = %operator.name, hook = %h.id, per_delivery, "console: hook's GitHub messages changed");
            Redirect::to("/hooks").into_response()
        }
        Err(StorageError::NotFound(_)) => no_such_hook(&id),
        Err(e) => store_error(e),
    }
}
