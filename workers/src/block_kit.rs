//! Slack's Block Kit limits, in one place: the builders keep within them, and tests check every message against
//! them. <https://api.slack.com/reference/block-kit/blocks>

use serde_json::Value;

use crate::slack::{SlackMessage, truncate};

/// Blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// A section's text.
pub const MAX_SECTION_TEXT: usize = 3_000;
/// A header's text.
pub const MAX_HEADER_TEXT: usize = 150;
/// One field of a section.
pub const MAX_FIELD_TEXT: usize = 2_000;
/// Fields per section.
pub const MAX_FIELDS: usize = 10;
/// Elements per context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// The `text` of a message (Slack truncates past 40,000; the fallback is kept far shorter).
pub const MAX_TEXT: usize = 4_000;

/// Escapes the three characters Slack's mrkdwn reads as markup (`&`, `<`, `>`).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An `http(s)` URL fit for a link, else `None`: a payload's URL such as `!channel` would otherwise become
/// `<!channel|…>`, which notifies the whole channel.
pub fn safe_url(url: &str) -> Option<&str> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2_000
        && !url.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '|'));
    ok.then_some(url)
}

/// A link in mrkdwn; the label escaped, and `|` (which would end it) replaced. A URL that is not `http(s)` leaves
/// the label alone.
pub fn link(url: &str, label: &str) -> String {
    let label = escape(label).replace('|', "¦");
    match safe_url(url) {
        Some(url) => format!("<{url}|{label}>"),
        None => label,
    }
}

/// Inline code in mrkdwn: escaped, with no backtick to end it early.
pub fn code(text: &str) -> String {
    format!("`{}`", escape(text).replace('`', "'"))
}

/// A section of mrkdwn text, cut to the limit.
pub fn section(text: &str) -> Value {
    serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT - 1, "…")}})
}

/// A context block of mrkdwn elements (at most ten, each cut to the section limit).
pub fn context(elements: &[String]) -> Value {
    let elements: Vec<Value> = elements
        .iter()
        .filter(|e| !e.is_empty())
        .take(MAX_CONTEXT_ELEMENTS)
        .map(|e| serde_json::json!({"type": "mrkdwn", "text": truncate(e, MAX_SECTION_TEXT - 1, "…")}))
        .collect();
    serde_json::json!({"type": "context", "elements": elements})
}

/// What in `message` breaks a Block Kit limit (empty: none). Checks the limits this codebase can reach.
pub fn problems(message: &SlackMessage) -> Vec<String> {
    let mut out = Vec::new();
    if message.text.trim().is_empty() {
        out.push("no text fallback".to_owned());
    }
    if message.text.chars().count() > MAX_TEXT {
        out.push(format!("text of {} characters", message.text.chars().count()));
    }
    let Some(blocks) = &message.blocks else { return out };
    let Some(blocks) = blocks.as_array() else {
        out.push("blocks is not an array".to_owned());
        return out;
    };
    if blocks.len() > MAX_BLOCKS {
        out.push(format!("{} blocks", blocks.len()));
    }
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    for (i, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("section") => {
                let text = chars(&block["text"]["text"]);
                if text > MAX_SECTION_TEXT {
                    out.push(format!("block {i}: section text of {text} characters"));
                }
                if block.get("text").is_some() && text == 0 {
                    out.push(format!("block {i}: empty section text"));
                }
                if let Some(fields) = block["fields"].as_array() {
                    if fields.len() > MAX_FIELDS {
                        out.push(format!("block {i}: {} fields", fields.len()));
                    }
                    for field in fields {
                        let n = chars(&field["text"]);
                        if n > MAX_FIELD_TEXT || n == 0 {
                            out.push(format!("block {i}: a field of {n} characters"));
                        }
                    }
                }
                if block.get("text").is_none() && block.get("fields").is_none() {
                    out.push(format!("block {i}: section without text or fields"));
                }
            }
            Some("header") => {
                let n = chars(&block["text"]["text"]);
                if n > MAX_HEADER_TEXT || n == 0 {
                    out.push(format!("block {i}: header of {n} characters"));
                }
            }
            Some("context") => {
                let elements = block["elements"].as_array().map_or(0, Vec::len);
                if elements == 0 || elements > MAX_CONTEXT_ELEMENTS {
                    out.push(format!("block {i}: context of {elements} elements"));
                }
            }
            Some("divider" | "actions" | "image") => {}
            other => out.push(format!("block {i}: unexpected type {other:?}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_links() {
        assert_eq!(escape("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(link("https://x/y", "a|b <c>"), "<https://x/y|a¦b &lt;c&gt;>");
        assert_eq!(link("!channel", "open"), "open");
        assert_eq!(link("https://x/<!channel>", "open"), "open");
        assert_eq!(code("a`b<c"), "`a'b&lt;c`");
    }

    #[test]
    fn problems_are_found() {
        let ok = SlackMessage {
            channel: "#c".into(),
            text: "t".into(),
            blocks: Some(Value::Array(vec![section("hi"), context(&["a".into()])])),
            attachments: None,
            thread_ts: None,
        };
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let long = serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3001)}});
        let bad = SlackMessage { text: String::new(), blocks: Some(Value::Array(vec![long; 51])), ..ok };
        let found = problems(&bad);
        assert!(found.iter().any(|p| p.contains("no text")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("51 blocks")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("3001 characters")), "{found:?}");
        assert!(section(&"é".repeat(4000))["text"]["text"].as_str().unwrap().chars().count() <= MAX_SECTION_TEXT);
    }
}
