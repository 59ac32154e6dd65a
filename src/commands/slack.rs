//! `eventfleet slack manifest`: the Slack app this fleet needs, as the manifest Slack's "Create an app → From a
//! manifest" takes (docs/deployment.md walks through it).

use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};

use super::print_json;
use crate::cli::SlackCommand;
use crate::config::Config;

/// Every Slack Web API method the fleet calls with its bot token, and the bot scopes each needs. A test reads
/// the workers' and the ingress's sources and fails when they call a method missing here.
const BOT_METHODS: &[(&str, &[&str])] = &[
    // `chat:write.public`: hooks and topics name channels the bot was never invited to.
    ("chat.postMessage", &["chat:write", "chat:write.public"]),
    ("chat.update", &["chat:write"]),
    // Exactly-once posts: a retried attempt reads the channel (or thread) for the event's earlier post.
    ("conversations.history", &["channels:history", "groups:history"]),
    ("conversations.replies", &["channels:history", "groups:history"]),
    // A channel named `#name` is found by its id for the reads above and `chat.update`.
    ("conversations.list", &["channels:read", "groups:read"]),
];

/// Methods called with the app-level token (`EVENTFLEET_SLACK_APP_TOKEN`, Socket Mode): their scope is the
/// token's, granted when the token is made, not the manifest's.
const APP_TOKEN_METHODS: &[(&str, &str)] = &[("apps.connections.open", "connections:write")];

/// Bot scopes for what the manifest subscribes to rather than calls.
const SUBSCRIPTION_SCOPES: &[&str] = &[
    // The slash command.
    "commands",
    // The `app_mention` bot event.
    "app_mentions:read",
];

/// Runs a slack command.
pub fn run(config: &Config, command: SlackCommand) -> anyhow::Result<ExitCode> {
    let SlackCommand::Manifest { name, command } = command;
    let socket_mode = config.ingress.socket_mode.is_some();
    let base = match (&config.public_url, socket_mode) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => bail!(
            "set EVENTFLEET_PUBLIC_URL to the https:// URL Slack reaches the ingress at (its request URLs are \
             built from it), or EVENTFLEET_SLACK_APP_TOKEN for Socket Mode, where Slack needs no URL"
        ),
    };
    if !command.starts_with('/') || command.len() < 2 || command.contains(char::is_whitespace) {
        bail!("--command must be a slash command like /eventfleet, got {command:?}");
    }
    print_json(&manifest(&name, &command, base.as_deref(), socket_mode))?;
    if socket_mode {
        for (method, scope) in APP_TOKEN_METHODS {
            eprintln!("note: the app-level token (EVENTFLEET_SLACK_APP_TOKEN) needs {scope}, for {method}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every bot scope the manifest asks for, sorted.
pub fn bot_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&str> =
        BOT_METHODS.iter().flat_map(|(_, s)| s.iter().copied()).chain(SUBSCRIPTION_SCOPES.iter().copied()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// The manifest. With Socket Mode, Slack delivers over the WebSocket and takes no request URLs; without it,
/// every URL is `base` + the ingress's route.
fn manifest(name: &str, command: &str, base: Option<&str>, socket_mode: bool) -> Value {
    let url = |path: &str| base.filter(|_| !socket_mode).map(|b| format!("{}{path}", b.trim_end_matches('/')));
    let mut slash = json!({
        "command": command,
        "description": "Talk to eventfleet",
        "should_escape": false,
    });
    let mut events = json!({ "bot_events": ["app_mention"] });
    let mut interactivity = json!({ "is_enabled": true });
    if let Some(u) = url("/slack/commands") {
        slash["url"] = json!(u);
    }
    if let Some(u) = url("/slack/events") {
        events["request_url"] = json!(u);
    }
    if let Some(u) = url("/slack/interactions") {
        interactivity["request_url"] = json!(u);
    }
    json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": name,
            "description": "Alarms, CI runs and webhooks for the SRE team, posted by eventfleet",
        },
        "features": {
            "bot_user": { "display_name": name, "always_online": true },
            "slash_commands": [slash],
        },
        "oauth_config": { "scopes": { "bot": bot_scopes() } },
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": false,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": false,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// API families whose methods the scan looks for.
    const FAMILIES: &[&str] = &["chat", "conversations", "apps", "users", "reactions", "files", "views", "pins"];

    /// Slack method names in a source text: `family.method` right after a quote or a slash, right before a quote
    /// (`"chat.postMessage"`, `"{}/apps.connections.open"`).
    fn methods_in(text: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for family in FAMILIES {
            let needle = format!("{family}.");
            for (at, _) in text.match_indices(&needle) {
                if !matches!(text[..at].chars().next_back(), Some('"' | '/')) {
                    continue;
                }
                let rest = &text[at..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(0);
                if rest[end..].starts_with('"') && end > needle.len() {
                    found.insert(rest[..end].to_owned());
                }
            }
        }
        found
    }

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    #[test]
    fn the_manifest_asks_for_every_scope_the_code_needs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        for crate_dir in ["workers/src", "ingress/src"] {
            sources(&root.join(crate_dir), &mut texts);
        }
        let called: BTreeSet<String> = texts.iter().flat_map(|t| methods_in(t)).collect();
        assert!(called.contains("chat.postMessage") && called.contains("apps.connections.open"), "{called:?}");
        let doc = manifest("eventfleet", "/eventfleet", Some("https://events.example.com"), false);
        let granted: BTreeSet<&str> =
            doc["oauth_config"]["scopes"]["bot"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for method in &called {
            if APP_TOKEN_METHODS.iter().any(|(m, _)| m == method) {
                continue;
            }
            let (_, scopes) = BOT_METHODS
                .iter()
                .find(|(m, _)| m == method)
                .unwrap_or_else(|| panic!("the code calls {method}: add it and its scopes to BOT_METHODS"));
            for scope in *scopes {
                assert!(granted.contains(scope), "{method} needs {scope}, which the manifest lacks");
            }
        }
    }

    #[test]
    fn request_urls_follow_the_public_url_and_socket_mode_needs_none() {
        let http = manifest("ef", "/ef", Some("https://events.example.com/"), false);
        assert_eq!(http["settings"]["event_subscriptions"]["request_url"], "https://events.example.com/slack/events");
        assert_eq!(http["settings"]["interactivity"]["request_url"], "https://events.example.com/slack/interactions");
        assert_eq!(http["features"]["slash_commands"][0]["url"], "https://events.example.com/slack/commands");
        assert_eq!(http["settings"]["socket_mode_enabled"], false);
        let socket = manifest("ef", "/ef", Some("https://events.example.com"), true);
        assert_eq!(socket["settings"]["socket_mode_enabled"], true);
        assert!(socket["settings"]["event_subscriptions"].get("request_url").is_none());
        assert!(socket["features"]["slash_commands"][0].get("url").is_none());
    }

    #[test]
    fn the_method_scan_finds_calls_and_skips_prose() {
        let text = r#"self.call("conversations.list", q); format!("{}/apps.connections.open", b); "chat.update: x""#;
        let found = methods_in(text);
        assert_eq!(found, ["apps.connections.open", "conversations.list"].map(String::from).into());
    }
}
