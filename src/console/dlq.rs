//! Dead letters: the CLI's filters, each letter with its reason and attempts; replay one, a selection or a
//! filter, always through a preview (how many, which groups, in what order, at what rate) and a confirmation,
//! then a progress page; purge through a confirmation. Selections are resolved to dead-letter ids at the
//! preview, and the confirmation acts on exactly those.

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use eventfleet_schema::{AuditEntry, Status, Step};
use eventfleet_storage::{DeadLetter, DeadLetterFilter};
use eventfleet_workers::replay::ReplayOptions;
use maud::{Markup, html};
use serde::Deserialize;

use super::csrf::{CsrfToken, Form};
use super::page::{self, Section};
use super::{Operator, Shared, store_error};

/// Most rows a listing shows (a filter narrows it; a replay of the filter takes them all).
const SHOWN: usize = 500;

/// The filter fields, as in the query string and as hidden form fields.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

impl Filters {
    fn from_form(form: &Form) -> Self {
        let f = |name: &str| form.get(name).unwrap_or_default().to_owned();
        Filters { source: f("source"), kind: f("kind"), error: f("error"), since: f("since"), until: f("until") }
    }

    fn to_filter(&self, now: eventfleet_schema::Timestamp) -> Result<DeadLetterFilter, String> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let time = |s: &str, what: &str| {
            text(s).map(|t| crate::when::parse(&t, now).map_err(|e| format!("{what}: {e}"))).transpose()
        };
        Ok(DeadLetterFilter {
            source: text(&self.source),
            kind: text(&self.kind),
            error: text(&self.error),
            since: time(&self.since, "since")?,
            until: time(&self.until, "until")?,
            limit: None,
        })
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="source" value=(self.source);
            input type="hidden" name="kind" value=(self.kind);
            input type="hidden" name="error" value=(self.error);
            input type="hidden" name="since" value=(self.since);
            input type="hidden" name="until" value=(self.until);
        }
    }
}

/// `GET /dlq`.
pub async fn page(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    Query(filters): Query<Filters>,
) -> Response {
    let filter = match filters.to_filter(app.store.clock.now()) {
        Ok(f) => f,
        Err(e) => return bad_request(&e),
    };
    let letters = match app.store.dead_letters.list(&filter).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    // Each shown letter's attempts, from its retry record (a few reads at a time).
    let attempts: Vec<Option<u32>> = {
        use futures_util::StreamExt;
        let ids: Vec<_> = letters.iter().take(SHOWN).map(|l| l.envelope.event_id()).collect();
        let reads = ids.into_iter().map(|id| {
            let store = app.store.clone();
            async move { store.retries.get(id).await.ok().flatten().map(|r| r.attempts) }
        });
        futures_util::stream::iter(reads).buffered(16).collect().await
    };
    let body = html! {
        form.filters method="get" action="/dlq" {
            label { "Source"
                select name="source" {
                    @for s in std::iter::once("").chain(eventfleet_schema::Source::NAMES) {
                        option value=(s) selected[filters.source == s] { (if s.is_empty() { "any" } else { s }) }
                    }
                }
            }
            label { "Kind" input type="text" name="kind" value=(filters.kind) placeholder="slack.event, github.push"; }
            label { "Reason contains" input type="text" name="error" value=(filters.error); }
            label { "Since" input type="text" name="since" value=(filters.since) placeholder="2h, 7d or RFC 3339"; }
            label { "Until" input type="text" name="until" value=(filters.until); }
            button type="submit" { "Filter" }
        }
        p #dlq-count { (letters.len()) (if letters.len() == 1 { " dead letter matches" } else { " dead letters match" }) @if letters.len() > SHOWN { " (the oldest " (SHOWN) " shown)" } "." }
        @if !letters.is_empty() {
            form method="post" action="/dlq/preview" {
                (page::csrf_field(&csrf))
                (filters.hidden())
                div.actions {
                    button type="submit" name="scope" value="selected" { "Preview replay of selected" }
                    button type="submit" name="scope" value="filter" { "Preview replay of all " (letters.len()) " matching" }
                    button.danger type="submit" name="scope" value="selected" formaction="/dlq/purge" { "Purge selected…" }
                    button.danger type="submit" name="scope" value="filter" formaction="/dlq/purge" { "Purge all matching…" }
                }
                table #dead-letters {
                    thead { tr { th {} th { "Dead-lettered" } th { "Kind" } th { "Event" } th { "Group" } th { "Attempts" } th { "Receives" } th { "Reason" } } }
                    tbody {
                        @for (l, tried) in letters.iter().zip(&attempts) {
                            tr data-event-id=(l.envelope.event_id()) {
                                td { input type="checkbox" name="ids" value=(l.message_id) aria-label="select"; }
                                td { (page::time(l.dead_lettered_at)) }
                                td { code { (l.envelope.kind()) } }
                                td { a href={"/events?q=" (l.envelope.event_id())} { code { (l.envelope.event_id()) } } }
                                td { code { (l.envelope.message_group()) } }
                                td.num.attempts { @if let Some(n) = tried { (n) } @else { "–" } }
                                td.num { (l.receive_count) }
                                td.reason { (l.reason) }
                            }
                        }
                    }
                }
            }
        }
    };
    page::frame("Dead letters", Section::DeadLetters, &operator, &csrf, body).into_response()
}

/// The dead letters a form names: its `ids` (scope `selected`), or its filter (scope `filter`), oldest first.
/// Ids no longer on the DLQ are returned apart.
async fn selection(app: &Shared, form: &Form) -> Result<(Vec<DeadLetter>, Vec<String>), Response> {
    let now = app.store.clock.now();
    let (filter, ids) = match form.get("scope") {
        Some("filter") => (Filters::from_form(form).to_filter(now).map_err(|e| bad_request(&e))?, None),
        _ => {
            let ids: BTreeSet<String> = form.all("ids").into_iter().collect();
            if ids.is_empty() {
                return Err(bad_request("select dead letters first (or act on all matching)"));
            }
            (DeadLetterFilter::default(), Some(ids))
        }
    };
    let all = app.store.dead_letters.list(&filter).await.map_err(store_error)?;
    let Some(ids) = ids else { return Ok((all, Vec::new())) };
    let letters: Vec<DeadLetter> = all.into_iter().filter(|l| ids.contains(&l.message_id.0)).collect();
    let present: BTreeSet<&str> = letters.iter().map(|l| l.message_id.0.as_str()).collect();
    let gone = ids.iter().filter(|id| !present.contains(id.as_str())).cloned().collect();
    Ok((letters, gone))
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, html! { p.error { (why) } }).into_response()
}

/// `POST /dlq/preview`: the dry run.
pub async fn preview(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    form: Form,
) -> Response {
    let (letters, gone) = match selection(&app, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Groups in the order their first letter replays; within a group, letters keep their order.
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for l in &letters {
        match groups.iter_mut().find(|(g, _)| *g == l.envelope.message_group()) {
            Some((_, n)) => *n += 1,
            None => groups.push((l.envelope.message_group(), 1)),
        }
    }
    let body = html! {
        section #replay-preview {
            p.lead { "Dry run: nothing has changed yet. A replay would put " strong #preview-count { (letters.len()) }
                " " (letters_word(letters.len())) " back on the queue, each at the tail of its group, as a first attempt, audited as "
                strong { (operator.actor()) } "." }
            @if !gone.is_empty() { p.warn { (gone.len()) " of the selected are no longer on the DLQ (replayed or purged meanwhile)." } }
            @if letters.is_empty() { p { "Nothing to replay." } a href="/dlq" { "Back to dead letters" } }
            @else {
                h2 { (groups.len()) " message groups" }
                table #preview-groups {
                    thead { tr { th { "Group" } th { "Letters" } } }
                    tbody { @for (g, n) in &groups { tr { td { code { (g) } } td.num { (n) } } } }
                }
                h2 { "In this order" }
                ol #preview-order {
                    @for l in letters.iter().take(100) {
                        li { code { (l.envelope.event_id()) } " " code { (l.envelope.kind()) } " — " (l.reason) }
                    }
                    @if letters.len() > 100 { li.muted { "… and " (letters.len() - 100) " more" } }
                }
                form method="post" action="/dlq/replay" {
                    (page::csrf_field(&csrf))
                    @for l in &letters { input type="hidden" name="ids" value=(l.message_id); }
                    input type="hidden" name="scope" value="selected";
                    label { "Rate (replays per second; empty for as fast as the store allows)"
                        input type="number" name="rate" min="0.1" max="1000" step="any" value="10"; }
                    label.confirm { input type="checkbox" name="confirm" value="yes" required;
                        " Replay these " (letters.len()) " " (letters_word(letters.len())) }
                    div.actions {
                        button #confirm-replay type="submit" { "Replay " (letters.len()) }
                        a href="/dlq" { "Cancel" }
                    }
                }
            }
        }
    };
    page::frame("Replay preview", Section::DeadLetters, &operator, &csrf, body).into_response()
}

/// `POST /dlq/replay`: confirmed; starts the replay and shows its progress.
pub async fn replay(State(app): State<Shared>, operator: Operator, form: Form) -> Response {
    if form.get("confirm") != Some("yes") {
        return bad_request("a replay needs its confirmation: preview it first, then confirm");
    }
    let rate = match form.get("rate").map(str::parse::<f64>) {
        None => None,
        Some(Ok(r)) if r.is_finite() && r > 0.0 && r <= 1000.0 => Some(r),
        Some(_) => return bad_request("the rate is a number of replays per second, above 0 and at most 1000"),
    };
    let (letters, _gone) = match selection(&app, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if letters.is_empty() {
        return bad_request("none of these dead letters is on the DLQ any more (replayed or purged meanwhile)");
    }
    tracing::info!(operator = %operator.name, letters = letters.len(), ?rate, "console replay started");
    let options = ReplayOptions { by: operator.actor(), dry_run: false, rate };
    let id = app.jobs.start(app.store.clone(), letters, options);
    Redirect::to(&format!("/dlq/replays/{id}")).into_response()
}

/// `GET /dlq/replays/{id}`.
pub async fn progress(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    Path(id): Path<u64>,
) -> Response {
    let panel = match progress_markup(&app, id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let body = html! { div #replay-progress { (panel) } };
    page::frame("Replay", Section::DeadLetters, &operator, &csrf, body).into_response()
}

/// `GET /dlq/replays/{id}/panel`: the progress alone, for the poll.
pub async fn progress_panel(State(app): State<Shared>, _operator: Operator, Path(id): Path<u64>) -> Response {
    match progress_markup(&app, id).await {
        Ok(m) => m.into_response(),
        Err(r) => r,
    }
}

async fn progress_markup(app: &Shared, id: u64) -> Result<Markup, Response> {
    let Some(job) = app.jobs.get(id) else {
        return Err((StatusCode::NOT_FOUND, "no such replay on this console (it may have restarted)").into_response());
    };
    let (by, started_at, total, done, finished, outcomes) = {
        let j = job.lock().unwrap_or_else(|e| e.into_inner());
        (j.by.clone(), j.started_at, j.total, j.done, j.finished, j.outcomes.clone())
    };
    // What became of each replayed event since: its latest step and its record.
    let states = super::jobs::followed(&app.store, outcomes.iter().map(|o| o.event_id)).await.map_err(store_error)?;
    let rows: Vec<_> = outcomes.iter().zip(states).map(|(o, (last, status))| (o, last, status)).collect();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let settled = finished
        && rows.iter().all(|(o, _, status)| o.error.is_some() || matches!(status, Some(Status::Done | Status::Dead)));
    let poll = !settled && super::jobs::still_polling(&app.store, started_at);
    let by_status = rows.iter().fold(BTreeMap::<String, usize>::new(), |mut m, (_, last, _)| {
        *m.entry(last.as_ref().map_or("?".into(), |l| l.step.as_str().to_owned())).or_default() += 1;
        m
    });
    Ok(html! {
        div hx-get={"/dlq/replays/" (id) "/panel"} hx-trigger=[poll.then_some("every 1s")] hx-swap="outerHTML" {
            p.lead #replay-state data-finished=(finished) data-settled=(settled) {
                @if finished { "Replayed " } @else { "Replaying… " }
                strong #replay-done { (done) } " of " (total) " by " strong { (by) }
                @if failed > 0 { " · " span.bad { (failed) " failed" } }
            }
            progress max=(total.max(1)) value=(done) {}
            @if finished {
                p.muted { "Latest step of each replayed event: "
                    @for (step, n) in &by_status { code { (step) } " " (n) "  " }
                    @if poll { "(following until each is done)" } }
            }
            table #replay-outcomes {
                thead { tr { th { "Event" } th { "Requeued as" } th { "Latest step" } th { "Status" } } }
                tbody {
                    @for (o, last, status) in &rows {
                        tr data-event-id=(o.event_id) {
                            td { a href={"/events?q=" (o.event_id)} { code { (o.event_id) } } }
                            td { @if let Some(m) = &o.requeued_as { code { (m) } } @if let Some(e) = &o.error { span.bad { (e) } } }
                            td.latest-step { @if let Some(l) = last { code { (l.step.as_str()) } " " span.muted { (l.actor) } } }
                            td.event-status { @if let Some(s) = status { (s) } }
                        }
                    }
                }
            }
            @if outcomes.len() > super::jobs::FOLLOWED { p.muted { "… and " (outcomes.len() - super::jobs::FOLLOWED) " more, each in its own trail." } }
        }
    })
}

/// `POST /dlq/purge`: without `confirm=yes`, the confirmation; with it, the deletion, audited per event.
pub async fn purge(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    form: Form,
) -> Response {
    let (letters, _gone) = match selection(&app, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if form.get("confirm") != Some("yes") {
        let body = html! {
            section #purge-confirm {
                p.lead { "Purge " strong #purge-count { (letters.len()) } " " (letters_word(letters.len())) "? They are deleted for good: \
                    they can no longer be replayed. Each event's trail records who purged it." }
                @if !letters.is_empty() {
                    ul { @for l in letters.iter().take(20) { li { code { (l.envelope.event_id()) } " " (l.reason) } } }
                    form method="post" action="/dlq/purge" {
                        (page::csrf_field(&csrf))
                        @for l in &letters { input type="hidden" name="ids" value=(l.message_id); }
                        input type="hidden" name="scope" value="selected";
                        input type="hidden" name="confirm" value="yes";
                        div.actions {
                            button.danger #confirm-purge type="submit" { "Purge " (letters.len()) " for good" }
                            a href="/dlq" { "Cancel" }
                        }
                    }
                }
            }
        };
        return page::frame("Purge dead letters", Section::DeadLetters, &operator, &csrf, body).into_response();
    }
    let ids: Vec<_> = letters.iter().map(|l| l.message_id.clone()).collect();
    let deleted = match app.store.dead_letters.delete(&ids).await {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    let now = app.store.clock.now();
    let entries = (letters.iter())
        .map(|l| {
            AuditEntry::new(l.envelope.event_id(), now, Step::Purged, operator.actor())
                .with_detail(serde_json::json!({ "dead_letter": l.message_id, "reason": l.reason }))
        })
        .collect();
    if let Err(e) = app.store.audit.append(entries).await {
        tracing::warn!(error = %e, "purged dead letters, but their audit lines were not written");
    }
    tracing::info!(operator = %operator.name, deleted, "console purge");
    let body = html! { p.lead #purged { "Purged " (deleted) " " (letters_word(deleted as usize)) "." } a href="/dlq" { "Back to dead letters" } };
    page::frame("Purge dead letters", Section::DeadLetters, &operator, &csrf, body).into_response()
}

/// "dead letter" or "dead letters", as `n` needs.
fn letters_word(n: usize) -> &'static str {
    if n == 1 { "dead letter" } else { "dead letters" }
}
