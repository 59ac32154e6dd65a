//! The page frame and the markup pages share.

use eventfleet_schema::Timestamp;
use maud::{DOCTYPE, Markup, html};

use super::csrf::CsrfToken;

/// The sections of the console, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/`.
    Status,
    /// `/events`.
    Events,
    /// `/dlq`.
    DeadLetters,
    /// `/hooks`.
    Hooks,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx would otherwise add an inline <style>, which the CSP refuses.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
            title { (title) " · eventfleet console" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/htmx.min.js" defer {}
        }
    }
}

/// A whole page: navigation, who is logged in, then `body`.
pub fn frame(title: &str, section: Section, operator: &super::Operator, csrf: &CsrfToken, body: Markup) -> Markup {
    let link = |s: Section, href: &str, label: &str| {
        html! { a href=(href) class=[(s == section).then_some("current")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    strong.brand { "eventfleet" }
                    nav {
                        (link(Section::Status, "/", "Status"))
                        (link(Section::Events, "/events", "Find an event"))
                        (link(Section::DeadLetters, "/dlq", "Dead letters"))
                        (link(Section::Hooks, "/hooks", "Hooks"))
                    }
                    span.operator { "operator: " strong #operator { (operator.name) } }
                    @if operator.has_session {
                        form method="post" action="/logout" {
                            (csrf_field(csrf))
                            button.link type="submit" { "log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The login form (token mode), with an error after a refused attempt.
pub fn login(csrf: &CsrfToken, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body.login {
                main {
                    h1 { "eventfleet console" }
                    @if let Some(error) = error { p.error #login-error { (error) } }
                    form method="post" action="/login" {
                        (csrf_field(csrf))
                        label { "Your name (goes into the audit trail)" input type="text" name="name" autocomplete="username" required; }
                        label { "Console token" input type="password" name="token" autocomplete="current-password" required; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &CsrfToken) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf.0); }
}

/// A time as a `<time>` element (UTC, to the second).
pub fn time(t: Timestamp) -> Markup {
    let text = t.to_string();
    let short = text.get(..19).map(|s| s.replace('T', " ")).unwrap_or_else(|| text.clone());
    html! { time datetime=(text) { (short) } }
}

/// Milliseconds as a short duration (`850 ms`, `12.3 s`, `4 min`, `2.5 h`).
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A query-string-safe value.
pub fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
