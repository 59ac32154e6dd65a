//! Envelopes shown only as far as they are safe. The ingress already keeps signatures and secrets out of the
//! headers it stores; this is the second line: headers whose names suggest a credential are dropped, and in JSON
//! or form bodies the values of credential-like fields (Slack's verification `token`, `response_url`, which
//! lets its holder post as the app, passwords, keys) are replaced.

use std::collections::BTreeMap;

use eventfleet_schema::Body;

/// What replaces a hidden value.
pub const HIDDEN: &str = "[hidden]";

/// Longest body shown; the rest is cut.
const BODY_LIMIT: usize = 64 * 1024;

fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const WORDS: [&str; 12] = [
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "authorization",
        "cookie",
        "credential",
        "private",
        "api_key",
        "apikey",
        "response_url",
    ];
    WORDS.iter().any(|w| name.contains(w)) || name == "key" || name.ends_with("_key") || name.ends_with("-key")
}

/// The headers that are safe to show.
pub fn headers(headers: &BTreeMap<String, String>) -> Vec<(String, String)> {
    headers.iter().filter(|(k, _)| !is_sensitive(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The body as text with credential-like fields hidden: JSON pretty-printed, forms field by field (a Slack
/// `payload=` field is JSON inside a form), other text as it is; binary bodies are not shown.
pub fn body(body: &Body, content_type: Option<&str>) -> String {
    let text = match body {
        Body::Utf8(text) => text.as_str(),
        Body::Base64(data) => return format!("(binary body, {} bytes of base64, not shown)", data.len()),
    };
    let shown = if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(text) {
        hide_json(&mut json);
        serde_json::to_string_pretty(&json).unwrap_or_default()
    } else if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        form(text)
    } else {
        text.to_owned()
    };
    truncate(shown)
}

fn form(text: &str) -> String {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| {
            let value = if is_sensitive(&k) {
                HIDDEN.to_owned()
            } else if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(&v) {
                hide_json(&mut json);
                serde_json::to_string_pretty(&json).unwrap_or_default()
            } else {
                v.into_owned()
            };
            format!("{k} = {value}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hide_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_sensitive(k) && !v.is_object() && !v.is_array() {
                    *v = serde_json::Value::String(HIDDEN.into());
                } else {
                    hide_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide_json),
        _ => {}
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > BODY_LIMIT {
        let mut end = BODY_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n… (cut)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_and_the_rest_shown() {
        let slack = r#"{"token":"XXYYZZ","team_id":"T1","event":{"type":"app_mention","text":"hi","bot_token":"xoxb-1"},
            "authorizations":[{"enterprise_id":null,"api_key":"k"}],"event_id":"Ev1"}"#;
        let shown = body(&Body::Utf8(slack.into()), Some("application/json"));
        assert!(!shown.contains("XXYYZZ") && !shown.contains("xoxb-1") && !shown.contains("\"k\""), "{shown}");
        assert!(shown.contains("Ev1") && shown.contains("app_mention"), "{shown}");

        let slash = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T1&command=%2Fdeploy&text=api&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1%2F2";
        let shown = body(&Body::Utf8(slash.into()), Some("application/x-www-form-urlencoded"));
        assert!(!shown.contains("gIkuvaNzQIHg97ATvDxqgjtO") && !shown.contains("hooks.slack.com"), "{shown}");
        assert!(shown.contains("command = /deploy"), "{shown}");

        let interaction = "payload=%7B%22type%22%3A%22block_actions%22%2C%22token%22%3A%22abc%22%7D";
        let shown = body(&Body::Utf8(interaction.into()), Some("application/x-www-form-urlencoded"));
        assert!(shown.contains("block_actions") && !shown.contains("abc"), "{shown}");

        let mut h = BTreeMap::new();
        h.insert("content-type".to_owned(), "application/json".to_owned());
        h.insert("x-hub-signature-256".to_owned(), "sha256=1".to_owned());
        h.insert("x-api-key".to_owned(), "k".to_owned());
        assert_eq!(headers(&h), vec![("content-type".to_owned(), "application/json".to_owned())]);
        assert!(body(&Body::Base64("AAAA".into()), None).contains("not shown"));
    }

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let long = "é".repeat(BODY_LIMIT);
        let shown = body(&Body::Utf8(long), Some("text/plain"));
        assert!(shown.ends_with("(cut)") && shown.len() <= BODY_LIMIT + 16);
    }
}
