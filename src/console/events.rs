//! Find an event: by event id, idempotency key or the sender's own id ([`crate::lookup::events`]); its timeline
//! with actors, its retry record, and, while it is on the DLQ, its envelope as far as it is safe to show. Or
//! search the event log with the filters of `events list` (a page at a time), and select events to replay
//! ([`super::replays`]).

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

/// `?q=`, or the event log's filters.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
    #[serde(flatten)]
    filters: Filters,
    #[serde(default)]
    after: String,
}

/// The event log's filters, as in the query string and as hidden form fields.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub hook: String,
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub outcome: String,
}

impl Filters {
    /// From a posted form's hidden fields.
    pub fn from_form(form: &super::csrf::Form) -> Self {
        let f = |name: &str| form.get(name).unwrap_or_default().to_owned();
        Filters {
            since: f("since"),
            until: f("until"),
            source: f("source"),
            kind: f("kind"),
            hook: f("hook"),
            route: f("route"),
            outcome: f("outcome"),
        }
    }

    /// As the CLI's filters.
    pub fn args(&self) -> crate::cli::EventFilterArgs {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        crate::cli::EventFilterArgs {
            since: text(&self.since),
            until: text(&self.until),
            source: text(&self.source),
            kind: text(&self.kind),
            hook: text(&self.hook),
            route: text(&self.route),
            outcome: text(&self.outcome),
        }
    }

    /// Hidden fields carrying the filters.
    pub fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="since" value=(self.since);
            input type="hidden" name="until" value=(self.until);
            input type="hidden" name="source" value=(self.source);
            input type="hidden" name="kind" value=(self.kind);
            input type="hidden" name="hook" value=(self.hook);
            input type="hidden" name="route" value=(self.route);
            input type="hidden" name="outcome" value=(self.outcome);
        }
    }

    fn query_string(&self) -> String {
        let pairs = [
            ("since", &self.since),
            ("until", &self.until),
            ("source", &self.source),
            ("kind", &self.kind),
            ("hook", &self.hook),
            ("route", &self.route),
            ("outcome", &self.outcome),
        ];
        pairs.iter().map(|(k, v)| format!("{k}={}", urlencoding(v))).collect::<Vec<_>>().join("&")
    }
}

/// Percent-encodes a query value.
fn urlencoding(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Events a search page shows.
const PAGE: usize = 50;

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
    let filters = &search.filters;
    let args = filters.args();
    // A search of the log: with any filter set.
    let listing = if q.is_empty() && !args.is_empty() {
        let now = app.store.clock.now();
        let searched = match crate::event_search::search(&args, &app.config, now) {
            Ok(s) => s,
            Err(e) => return (axum::http::StatusCode::BAD_REQUEST, html! { p.error { (e) } }).into_response(),
        };
        let after = match search.after.trim() {
            "" => None,
            a => match a.parse::<eventfleet_storage::Cursor>() {
                Ok(c) => Some(c),
                Err(e) => return (axum::http::StatusCode::BAD_REQUEST, html! { p.error { (e) } }).into_response(),
            },
        };
        match crate::event_search::page(&app.store, &searched, PAGE, after).await {
            Ok(page) => Some(page),
            Err(e) => return (axum::http::StatusCode::SERVICE_UNAVAILABLE, html! { p.error { (e) } }).into_response(),
        }
    } else {
        None
    };
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
        h2 { "Search the event log" }
        (filter_form(filters, &app))
        @if let Some(page) = &listing { (results(page, filters, &csrf, &app)) }
    };
    page::frame("Find an event", Section::Events, &operator, &csrf, body).into_response()
}

fn filter_form(filters: &Filters, app: &Shared) -> Markup {
    let routes: Vec<&str> = app.config.routes.iter().map(|r| r.name.as_str()).collect();
    html! {
        form.filters #event-filters method="get" action="/events" {
            label { "Since" input type="text" name="since" value=(filters.since) placeholder="2h, 7d or RFC 3339"; }
            label { "Until" input type="text" name="until" value=(filters.until); }
            label { "Source"
                select name="source" {
                    @for s in std::iter::once("").chain(eventfleet_schema::Source::NAMES) {
                        option value=(s) selected[filters.source == s] { (if s.is_empty() { "any" } else { s }) }
                    }
                }
            }
            label { "Kind" input type="text" name="kind" value=(filters.kind) placeholder="github.*, sns.cloudwatch_alarm"; }
            label { "Hook" input type="text" name="hook" value=(filters.hook) placeholder="hook id"; }
            label { "Route"
                select name="route" {
                    option value="" selected[filters.route.is_empty()] { "any" }
                    @for r in &routes { option value=(r) selected[filters.route == *r] { (r) } }
                }
            }
            label { "Outcome"
                select name="outcome" {
                    @for o in ["", "succeeded", "filtered", "dead_lettered", "pending"] {
                        option value=(o) selected[filters.outcome == o] { (if o.is_empty() { "any" } else { o }) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
    }
}

fn results(page: &eventfleet_storage::EventPage, filters: &Filters, csrf: &CsrfToken, app: &Shared) -> Markup {
    html! {
        @if page.events.is_empty() {
            p #no-events { "No events match (" (crate::event_search::retention_note(&app.store)) ")." }
        } @else {
            form method="post" action="/events/preview" {
                (page::csrf_field(csrf))
                (filters.hidden())
                div.actions {
                    button #preview-selected type="submit" name="scope" value="selected" { "Preview replay of selected" }
                    button #preview-all type="submit" name="scope" value="filter" { "Preview replay of all matching" }
                }
                table #event-results {
                    thead { tr { th {} th { "Received" } th { "Event" } th { "Source" } th { "Kind" } th { "Outcome" } th { "Group" } } }
                    tbody {
                        @for e in &page.events {
                            tr data-event-id=(e.event_id) {
                                td { input type="checkbox" name="ids" value=(e.event_id) aria-label="select"; }
                                td { (page::time(e.received_at)) }
                                td { a href={"/events?q=" (e.event_id)} { code { (e.event_id) } } }
                                td { (e.source) }
                                td { code { (e.kind) } }
                                td.outcome { span class={"outcome " (e.outcome.as_str())} { (e.outcome.as_str()) } }
                                td { code { (e.group) } }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &page.next {
                a #next-page href={"/events?" (filters.query_string()) "&after=" (urlencoding(&next.to_string()))} { "Next page" }
            }
        }
    }
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
