//! Searching the event log the way operators ask: the filters of `events list|replay` and the console's Find
//! page, a route's match among them (a route filter is evaluated here against the routes file, so the backfill
//! of a route added later selects what it would have received).

use anyhow::{Context, bail};
use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{Cursor, EventPage, EventQuery, EventSummary, LoggedEvent, Store};
use eventfleet_workers::destinations::Match;

use crate::cli::EventFilterArgs;
use crate::config::Config;

/// The most events one replay selects by filters.
pub const MAX_SELECTED: usize = 100_000;

/// A parsed search.
#[derive(Debug, Clone)]
pub struct Search {
    /// What the store filters.
    pub query: EventQuery,
    /// The route whose match the events must pass.
    pub route: Option<(String, Match)>,
}

/// Parses the filters (times relative to `now`); a route must be in the routes file.
pub fn search(filter: &EventFilterArgs, config: &Config, now: Timestamp) -> anyhow::Result<Search> {
    let time = |text: &Option<String>, flag: &str| {
        text.as_deref().map(|t| crate::when::parse(t, now)).transpose().with_context(|| flag.to_owned())
    };
    let route = match filter.route.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        None => None,
        Some(name) => match config.routes.iter().find(|r| r.name == name) {
            Some(r) => Some((name.to_owned(), r.matcher.clone())),
            None => bail!(
                "no route {name:?} in the routes file{} (--route filters by a route's match)",
                if config.routes.is_empty() { " (EVENTFLEET_ROUTES_FILE is not set)" } else { "" }
            ),
        },
    };
    let nonempty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    Ok(Search {
        query: EventQuery {
            since: time(&filter.since, "--since")?,
            until: time(&filter.until, "--until")?,
            source: nonempty(&filter.source),
            kind: nonempty(&filter.kind),
            hook: nonempty(&filter.hook),
            outcome: nonempty(&filter.outcome).map(|o| o.parse()).transpose().map_err(anyhow::Error::msg)?,
            after: None,
            limit: 1,
        },
        route,
    })
}

/// One page of at most `limit` events after `after`: store pages are read until the route filter (if any) has
/// passed enough of them.
pub async fn page(store: &Store, search: &Search, limit: usize, after: Option<Cursor>) -> anyhow::Result<EventPage> {
    let mut query = EventQuery { after, limit, ..search.query.clone() };
    let mut out = EventPage::default();
    loop {
        let page = store.events.events(&query).await?;
        for e in page.events {
            if out.events.len() == limit {
                out.next = out.events.last().map(Cursor::from);
                return Ok(out);
            }
            let passes = match &search.route {
                None => true,
                Some(_) => matches_route(store, search, &e).await?,
            };
            if passes {
                out.events.push(e);
            }
        }
        match page.next {
            Some(next) if out.events.len() < limit => query.after = Some(next),
            // A full page whose last event was returned: the store's cursor is the same point.
            Some(next) => {
                out.next = Some(next);
                return Ok(out);
            }
            None => return Ok(out),
        }
    }
}

/// Whether the route of `search` matches `e` (its envelope is read for the hook; kind and source suffice else).
async fn matches_route(store: &Store, search: &Search, e: &EventSummary) -> anyhow::Result<bool> {
    let Some((_, matcher)) = &search.route else { return Ok(true) };
    let logged = store.events.get_many(&[e.event_id]).await?;
    Ok(logged.first().and_then(Option::as_ref).is_some_and(|l| matcher.matches(&l.envelope)))
}

/// Every event the search selects, oldest first, up to [`MAX_SELECTED`].
pub async fn select(store: &Store, search: &Search) -> anyhow::Result<Vec<EventSummary>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = page(store, search, 1000, after).await?;
        all.extend(page.events);
        if all.len() > MAX_SELECTED {
            bail!("more than {MAX_SELECTED} events match: narrow the filters (--since, --until, --kind ...)");
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// The retained events with these ids, oldest first (receipt time, then id: a listing's order, which keeps each
/// group's); an id not retained is an error naming it.
pub async fn logged(store: &Store, ids: &[EventId]) -> anyhow::Result<Vec<LoggedEvent>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(100) {
        for (id, found) in chunk.iter().zip(store.events.get_many(chunk).await?) {
            match found {
                Some(e) => out.push(e),
                None => bail!("event {id} is not in the event log any more (past its retention window)"),
            }
        }
    }
    out.sort_by_key(|e| (e.envelope.received_at(), e.envelope.event_id()));
    Ok(out)
}

/// What operators are told when the log has nothing for them.
pub fn retention_note(store: &Store) -> String {
    match store.events.retention() {
        Some(r) => format!("the event log keeps an event for {} h after it is done", r.as_secs() / 3600),
        None => "the event log is off (EVENTFLEET_RETENTION_H=0)".to_owned(),
    }
}
