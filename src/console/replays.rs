//! Replay of retained events found on the events page, as `events replay` does it: always through a preview
//! (how many, which groups, the time range, what is left alone and why), a choice of target (every handler or
//! one route), post-again, a rate and a reason, and a confirmation; then a progress page that can stop it.
//! Selections are resolved to event ids at the preview, and the confirmation acts on exactly those; a filter that
//! matches more than a thousand travels as the filter with the previewed events' time range (absolute), so the
//! confirmation acts on the same range.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use eventfleet_schema::{EventId, Status, Timestamp};
use eventfleet_storage::LoggedEvent;
use eventfleet_workers::replay::events::{EventReplayOptions, preview as preview_of, why_not};
use maud::{Markup, html};

use super::csrf::{CsrfToken, Form};
use super::events::Filters;
use super::page::{self, Section};
use super::{Operator, Shared};

/// Most events whose ids a confirmation form carries; a larger replay of a filter carries the filter.
const ID_FIELDS: usize = 1000;

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, html! { p.error { (why) } }).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, html! { p.error { (e.to_string()) } }).into_response()
}

/// The retained events a form names: its `ids` (scope `selected`) or its filters (scope `filter`), oldest first.
async fn selection(app: &Shared, form: &Form) -> Result<Vec<LoggedEvent>, Response> {
    let ids: Vec<EventId> = match form.get("scope") {
        Some("filter") => {
            let args = Filters::from_form(form).args();
            if args.is_empty() {
                return Err(bad_request("set a filter first (since, kind, route ...)"));
            }
            let search = crate::event_search::search(&args, &app.config, app.store.clock.now())
                .map_err(|e| bad_request(&e.to_string()))?;
            let found = crate::event_search::select(&app.store, &search).await.map_err(unavailable)?;
            found.iter().map(|e| e.event_id).collect()
        }
        _ => {
            let mut ids = BTreeSet::new();
            for text in form.all("ids") {
                ids.insert(EventId::parse(&text).ok_or_else(|| bad_request(&format!("{text:?} is not an event id")))?);
            }
            if ids.is_empty() {
                return Err(bad_request("select events first (or act on all matching)"));
            }
            // Sorted by receipt by `logged`, which keeps each group's order.
            ids.into_iter().collect()
        }
    };
    crate::event_search::logged(&app.store, &ids).await.map_err(|e| bad_request(&e.to_string()))
}

/// `POST /events/preview`: the dry run.
pub async fn preview(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    form: Form,
) -> Response {
    let events = match selection(&app, &form).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let p = preview_of(&events);
    let routes: Vec<&str> = app.config.routes.iter().map(|r| r.name.as_str()).collect();
    // Ids as hidden fields up to a thousand; past that the form would outgrow the console's body limit.
    let by_filter = (form.get("scope") == Some("filter") && p.count > ID_FIELDS).then(|| {
        let mut filters = Filters::from_form(&form);
        // The range is the previewed events' own, in absolute times ("2h" would move before the confirmation).
        if let (Some(first), Some(last)) = (p.first, p.last) {
            filters.since = first.to_string();
            filters.until = Timestamp::from_millis(last.as_millis() + 1).to_string();
        }
        filters
    });
    let body = html! {
        section #event-replay-preview {
            p.lead { "Dry run: nothing has changed yet. A replay would put " strong #preview-count { (p.count) }
                " " (events_word(p.count)) " back on the queue, each at the tail of its message group with its own event id, audited as "
                strong { (operator.actor()) } "." }
            @if let (Some(first), Some(last)) = (p.first, p.last) {
                p #preview-range { "Received from " (page::time(first)) " to " (page::time(last)) "." }
            }
            @if p.skipped > 0 {
                h2 { (p.skipped) " left alone" }
                ul #preview-skipped {
                    @for e in events.iter().filter(|e| why_not(e).is_some()).take(20) {
                        li { code { (e.envelope.event_id()) } " — " (why_not(e).unwrap_or_default()) }
                    }
                }
            }
            @if p.count == 0 { p { "Nothing to replay." } a href="/events" { "Back to the search" } }
            @else {
                h2 { (p.groups.len()) (if p.groups.len() == 1 { " message group" } else { " message groups" }) }
                table #preview-groups {
                    thead { tr { th { "Group" } th { "Events" } } }
                    tbody { @for (g, n) in &p.groups { tr { td { code { (g) } } td.num { (n) } } } }
                }
                form method="post" action="/events/replay" {
                    (page::csrf_field(&csrf))
                    @if let Some(filters) = &by_filter {
                        // Thousands of events: the filters travel instead of their ids, with the range closed
                        // at this preview so that events arriving meanwhile are not added.
                        (filters.hidden())
                        input type="hidden" name="scope" value="filter";
                    } @else {
                        @for e in events.iter().filter(|e| why_not(e).is_none()) {
                            input type="hidden" name="ids" value=(e.envelope.event_id());
                        }
                        input type="hidden" name="scope" value="selected";
                    }
                    label { "Deliver to"
                        select name="to_route" {
                            option value="" { "every handler (as the first delivery did)" }
                            @for r in &routes { option value=(r) { "route " (r) " only" } }
                        }
                    }
                    label.check { input type="checkbox" name="post_again" value="yes";
                        " Post new messages in Slack and Teams (otherwise each post is looked for first and only what is missing is posted)" }
                    label { "Reason (on each event's trail)" input type="text" name="reason" required; }
                    label { "Rate (events per second; empty for as fast as the store allows)"
                        input type="number" name="rate" min="0.1" max="1000" step="any" value="10"; }
                    label.confirm { input type="checkbox" name="confirm" value="yes" required;
                        " Replay these " (p.count) " " (events_word(p.count)) }
                    div.actions {
                        button #confirm-event-replay type="submit" { "Replay " (p.count) }
                        a href="/events" { "Cancel" }
                    }
                }
            }
        }
    };
    page::frame("Replay preview", Section::Events, &operator, &csrf, body).into_response()
}

/// `POST /events/replay`: confirmed; starts the replay and shows its progress.
pub async fn replay(State(app): State<Shared>, operator: Operator, form: Form) -> Response {
    if form.get("confirm") != Some("yes") {
        return bad_request("a replay needs its confirmation: preview it first, then confirm");
    }
    let Some(reason) = form.get("reason").map(str::to_owned) else {
        return bad_request("say why (the reason is written on each event's trail)");
    };
    let rate = match form.get("rate").map(str::parse::<f64>) {
        None => None,
        Some(Ok(r)) if r.is_finite() && r > 0.0 && r <= 1000.0 => Some(r),
        Some(_) => return bad_request("the rate is a number of events per second, above 0 and at most 1000"),
    };
    let route = form.get("to_route").map(str::to_owned);
    if let Some(r) = &route
        && !app.config.routes.iter().any(|x| &x.name == r)
    {
        return bad_request(&format!("no route {r:?} in the routes file"));
    }
    let events = match selection(&app, &form).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let events: Vec<LoggedEvent> = events.into_iter().filter(|e| why_not(e).is_none()).collect();
    if events.is_empty() {
        return bad_request("none of these events can be replayed now (not done yet, or dead-lettered)");
    }
    tracing::info!(operator = %operator.name, events = events.len(), ?rate, ?route, "console replay of events started");
    let options = EventReplayOptions {
        by: operator.actor(),
        reason: Some(reason),
        route,
        post_again: form.get("post_again") == Some("yes"),
        dry_run: false,
        rate,
    };
    let id = app.jobs.start_events(app.store.clone(), events, options);
    Redirect::to(&format!("/events/replays/{id}")).into_response()
}

/// `POST /events/replays/{id}/cancel`: stops the replay between chunks.
pub async fn cancel(State(app): State<Shared>, operator: Operator, Path(id): Path<u64>, _form: Form) -> Response {
    let Some(job) = app.jobs.get_events(id) else {
        return (StatusCode::NOT_FOUND, "no such replay on this console (it may have restarted)").into_response();
    };
    job.lock().unwrap_or_else(|e| e.into_inner()).cancel.cancel();
    tracing::info!(operator = %operator.name, job = id, "console replay of events cancelled");
    Redirect::to(&format!("/events/replays/{id}")).into_response()
}

/// `GET /events/replays/{id}`.
pub async fn progress(
    State(app): State<Shared>,
    operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    Path(id): Path<u64>,
) -> Response {
    let panel = match progress_markup(&app, id, &csrf).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let body = html! { div #event-replay-progress { (panel) } };
    page::frame("Replay", Section::Events, &operator, &csrf, body).into_response()
}

/// `GET /events/replays/{id}/panel`: the progress alone, for the poll.
pub async fn progress_panel(
    State(app): State<Shared>,
    _operator: Operator,
    Extension(csrf): Extension<CsrfToken>,
    Path(id): Path<u64>,
) -> Response {
    match progress_markup(&app, id, &csrf).await {
        Ok(m) => m.into_response(),
        Err(r) => r,
    }
}

async fn progress_markup(app: &Shared, id: u64, csrf: &CsrfToken) -> Result<Markup, Response> {
    let Some(job) = app.jobs.get_events(id) else {
        return Err((StatusCode::NOT_FOUND, "no such replay on this console (it may have restarted)").into_response());
    };
    let (by, route, started_at, total, done, finished, cancelled, outcomes) = {
        let j = job.lock().unwrap_or_else(|e| e.into_inner());
        (
            j.by.clone(),
            j.route.clone(),
            j.started_at,
            j.total,
            j.done,
            j.finished,
            j.cancel.is_cancelled(),
            j.outcomes.clone(),
        )
    };
    let states =
        super::jobs::followed(&app.store, outcomes.iter().map(|o| o.event_id)).await.map_err(super::store_error)?;
    let rows: Vec<_> = outcomes.iter().zip(states).map(|(o, (last, status))| (o, last, status)).collect();
    let settled = finished
        && rows.iter().all(|(o, _, s)| o.requeued_as.is_none() || matches!(s, Some(Status::Done | Status::Dead)));
    let poll = !settled && super::jobs::still_polling(&app.store, started_at);
    let replayed = outcomes.iter().filter(|o| o.requeued_as.is_some()).count();
    Ok(html! {
        div hx-get={"/events/replays/" (id) "/panel"} hx-trigger=[poll.then_some("every 1s")] hx-swap="outerHTML" {
            p.lead #event-replay-state data-finished=(finished) data-settled=(settled) {
                @if finished { "Replayed " } @else { "Replaying… " }
                strong #event-replay-done { (done) } " of " (total) " to "
                (route.as_deref().map_or("every handler".to_owned(), |r| format!("route {r}")))
                " by " strong { (by) }
                @if finished { " · " (replayed) " sent" }
                @if cancelled { " · " span.bad #event-replay-cancelled { "stopped" } }
            }
            progress max=(total.max(1)) value=(done) {}
            @if !finished && !cancelled {
                form method="post" action={"/events/replays/" (id) "/cancel"} {
                    (page::csrf_field(csrf))
                    button.danger #stop-event-replay type="submit" { "Stop" }
                }
            }
            table #event-replay-outcomes {
                thead { tr { th { "Event" } th { "Requeued as" } th { "Latest step" } th { "Status" } } }
                tbody {
                    @for (o, last, status) in &rows {
                        tr data-event-id=(o.event_id) {
                            td { a href={"/events?q=" (o.event_id)} { code { (o.event_id) } } }
                            td {
                                @if let Some(m) = &o.requeued_as { code { (m) } }
                                @if let Some(s) = &o.skipped { span.muted { (s) } }
                                @if let Some(e) = &o.error { span.bad { (e) } }
                            }
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

/// "event" or "events", as `n` needs.
fn events_word(n: usize) -> &'static str {
    if n == 1 { "event" } else { "events" }
}
