//! Find an event: by event id, idempotency key or the sender's own id ([`crate::lookup::events`]); its timeline
//! with actors, its retry record, and, while it is on the DLQ, its envelope as far as it is safe to show.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use eventfleet_schema::{AuditEntry, RetryRecord};
use eventfleet_storage::DeadLetter;
use maud::{Markup, html};
use serde::Deserialize;

use super::csrf::CsrfToken;
use super::page::{self, Section};
use super::{Operator, Shared, redact, store_error};
use crate::lookup::EventMatch;

/// `?q=`.
#[derive(Debug, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

struct Found {
    event: EventMatch,
    steps: Vec<AuditEntry>,
    retry: Option<RetryRecord>,
    dead_letter: Option<DeadLetter>,
}

/// `GET /events?q=`.
pub async fn page(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    Query(search): Query<Search>,
) -> Response {
    let q = search.q.trim();
    let mut found = Vec::new();
    if !q.is_empty() {
        let matches = match crate::lookup::events(&app.store, q).await {
            Ok(m) => m,
            Err(e) => return store_error(e),
        };
        // The DLQ is read once for every match (it has no index by event).
        let dead = if matches.is_empty() {
            Vec::new()
        } else {
            match crate::lookup::dead_letters(&app.store, q).await {
                Ok(d) => d,
                Err(e) => return store_error(e),
            }
        };
        for event in matches {
            let (steps, retry) = match tokio::try_join!(
                app.store.audit.history(event.event_id),
                app.store.retries.get(event.event_id)
            ) {
                Ok(pair) => pair,
                Err(e) => return store_error(e),
            };
            if event.record.is_none() && steps.is_empty() {
                continue;
            }
            let dead_letter = dead.iter().find(|d| d.envelope.event_id() == event.event_id).cloned();
            found.push(Found { event, steps, retry, dead_letter });
        }
    }
    let body = html! {
        form.search method="get" action="/events" {
            input type="search" name="q" value=(q) autofocus
                placeholder="event id, idempotency key, Slack event_id, X-GitHub-Delivery or SNS MessageId";
            button type="submit" { "Find" }
        }
        @if !q.is_empty() && found.is_empty() {
            p #not-found { "No event with id, idempotency key or sender id " code { (q) } "." }
        }
        @for f in &found { (render(f, &csrf)) }
    };
    page::frame("Find an event", Section::Events, &operator, &csrf, body).into_response()
}

fn render(f: &Found, csrf: &CsrfToken) -> Markup {
    let id = f.event.event_id.to_string();
    html! {
        article.event data-event-id=(id) {
            h2 { "Event " code { (id) } }
            dl {
                @if let Some(r) = &f.event.record {
                    dt { "Key" } dd { code { (r.key) } }
                    dt { "Status" } dd { span class={"status " (r.status.to_string().to_lowercase())} .event-status { (r.status) } }
                    dt { "First seen" } dd { (page::time(r.first_seen)) }
                    dt { "Duplicates" } dd { (r.duplicate_count) }
                    @if let Some(o) = &r.outcome { dt { "Outcome" } dd { (o) } }
                } @else {
                    dt { "Record" } dd.muted { "expired (past the idempotency horizon); the trail remains" }
                }
            }
            h3 { "Timeline" }
            table.timeline {
                thead { tr { th { "At" } th { "Step" } th { "Actor" } th { "Detail" } } }
                tbody {
                    @for s in &f.steps {
                        tr class={"step " (s.step.as_str())} {
                            td { (page::time(s.at)) }
                            td { code { (s.step.as_str()) } }
                            td.actor { (s.actor) }
                            td.detail { @if !s.detail.is_null() { code { (s.detail.to_string()) } } }
                        }
                    }
                }
            }
            @if let Some(r) = &f.retry {
                h3 { "Retry record" }
                dl.retry {
                    dt { "Attempts" } dd { (r.attempts) }
                    dt { "Status" } dd { (r.status.as_str()) }
                    dt { "Last error" } dd { code { (r.error_class.as_str()) } " " (r.last_error) }
                }
            }
            @if let Some(d) = &f.dead_letter {
                h3 { "On the dead-letter queue" }
                p { "Dead letter " code { (d.message_id) } " since " (page::time(d.dead_lettered_at)) ": " (d.reason) }
                form method="post" action="/dlq/preview" {
                    (page::csrf_field(csrf))
                    input type="hidden" name="ids" value=(d.message_id);
                    input type="hidden" name="scope" value="selected";
                    button type="submit" { "Preview a replay…" }
                }
                (envelope(d))
            }
        }
    }
}

fn envelope(d: &DeadLetter) -> Markup {
    let eventfleet_schema::Envelope::V1(v1) = &d.envelope;
    let content_type = v1.headers.get("content-type").map(String::as_str);
    html! {
        details.envelope open {
            summary { "Envelope (" (v1.kind) ", group " code { (v1.message_group) } ")" }
            p.muted { "Signatures and credentials are not shown." }
            table.headers {
                @for (k, v) in redact::headers(&v1.headers) { tr { th { (k) } td { code { (v) } } } }
            }
            pre.body { (redact::body(&v1.body, content_type)) }
        }
    }
}
