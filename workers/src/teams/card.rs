//! The Teams layout of a message: the same content the handlers build for Slack (header, sections, fields,
//! context, buttons), laid out as an Adaptive Card (version 1.4) in the message envelope Teams' webhooks take.
//!
//! Each content type has one renderer ([`crate::handlers`], [`crate::github`]), whose Block Kit blocks carry the
//! facts: a section's `*Title*\nvalue` fields become a `FactSet`, a header a large bold `TextBlock`, a context
//! block a small subtle one, a link button an `Action.OpenUrl`. Slack's mrkdwn becomes the markdown subset cards
//! read (`**bold**`, `[label](url)`), its escapes are undone, and the emoji names the renderers use become emoji.
//! A card is cut to fit [`MAX_BYTES`] whatever the payload carried, and says so.

use serde_json::{Value, json};

use crate::slack::{SlackMessage, truncate};

/// Teams refuses a webhook message over 28 KB; the card is kept below this many bytes of JSON.
pub const MAX_BYTES: usize = 27 * 1024;

/// The card schema version: 1.4 is what Teams renders from webhooks.
pub const VERSION: &str = "1.4";

/// Elements of a card body at most (a long digest is cut, and says so).
const MAX_ELEMENTS: usize = 60;

/// Facts in one `FactSet` at most; the rest are counted in a last fact.
const MAX_FACTS: usize = 40;

/// Buttons (`Action.OpenUrl`) a card carries at most.
const MAX_ACTIONS: usize = 6;

/// Lines of one code block shown; the rest are counted.
const MAX_CODE_LINES: usize = 40;

/// The webhook message carrying `message` as an Adaptive Card; `footer` (the event id) closes it.
pub fn message(message: &SlackMessage, footer: &str) -> Value {
    let mut body = Vec::new();
    let mut actions = Vec::new();
    match message.blocks.as_ref().and_then(Value::as_array) {
        Some(blocks) if !blocks.is_empty() => {
            for block in blocks {
                layout_block(block, &mut body, &mut actions);
            }
        }
        _ => text_blocks(&message.text, &mut body),
    }
    if let Some(attachments) = message.attachments.as_ref().and_then(Value::as_array) {
        for attachment in attachments {
            layout_attachment(attachment, &mut body, &mut actions);
        }
    }
    let mut body = separators(body);
    if body.is_empty() {
        text_blocks(&message.text, &mut body);
    }
    let cut = body.len() > MAX_ELEMENTS || actions.len() > MAX_ACTIONS;
    body.truncate(MAX_ELEMENTS);
    actions.truncate(MAX_ACTIONS);
    let card = fit(body, actions, footer, cut);
    if size(&card) <= MAX_BYTES {
        return card;
    }
    // Still too big (a single element no cut could shrink): the message's text alone.
    let mut body = Vec::new();
    text_blocks(&truncate(&message.text, 8 * 1024, "… (cut)"), &mut body);
    fit(body, Vec::new(), footer, true)
}

/// The card, its texts cut (the longest allowed length halving) until it fits [`MAX_BYTES`], then its last
/// elements; a card that was cut says so.
fn fit(body: Vec<Value>, actions: Vec<Value>, footer: &str, cut: bool) -> Value {
    let card = envelope(body.clone(), actions.clone(), footer, cut);
    if size(&card) <= MAX_BYTES {
        return card;
    }
    let mut body = Value::Array(body);
    let mut limit = 4_000;
    while limit >= 100 {
        cut_texts(&mut body, limit);
        let card = envelope(body.as_array().cloned().unwrap_or_default(), actions.clone(), footer, true);
        if size(&card) <= MAX_BYTES {
            return card;
        }
        limit /= 2;
    }
    let mut elements = body.as_array().cloned().unwrap_or_default();
    loop {
        let card = envelope(elements.clone(), actions.clone(), footer, true);
        if size(&card) <= MAX_BYTES || elements.len() <= 1 {
            return card;
        }
        elements.pop();
    }
}

/// A divider (a `null` in `body`) as a line above the element after it.
fn separators(body: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(body.len());
    let mut line = false;
    for mut element in body {
        if element.is_null() {
            line = !out.is_empty();
            continue;
        }
        if std::mem::take(&mut line) {
            element["separator"] = Value::Bool(true);
        }
        out.push(element);
    }
    out
}

/// `{"type":"message","attachments":[{contentType, content: the card}]}`.
fn envelope(mut body: Vec<Value>, actions: Vec<Value>, footer: &str, cut: bool) -> Value {
    if cut {
        body.push(note("Cut to fit Teams' message limit: the whole event is in its trail."));
    }
    if !footer.is_empty() {
        body.push(note(footer));
    }
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": VERSION,
        "body": body,
        "msteams": { "width": "Full" },
    });
    if !actions.is_empty() {
        content["actions"] = Value::Array(actions);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

/// The size of the message as Teams receives it.
pub fn size(card: &Value) -> usize {
    serde_json::to_vec(card).map_or(usize::MAX, |v| v.len())
}

/// Cuts every `text` and fact `value` under `value` to `limit` bytes.
fn cut_texts(value: &mut Value, limit: usize) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| cut_texts(v, limit)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if (key == "text" || key == "value" || key == "title") && s.len() > limit => {
                        *s = truncate(s, limit, "… (cut)");
                    }
                    _ => cut_texts(v, limit),
                }
            }
        }
        _ => {}
    }
}

/// A small subtle line.
fn note(text: &str) -> Value {
    json!({"type": "TextBlock", "text": text, "wrap": true, "size": "Small", "isSubtle": true})
}

fn layout_block(block: &Value, body: &mut Vec<Value>, actions: &mut Vec<Value>) {
    let text_of = |v: &Value| v.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
    match block.get("type").and_then(Value::as_str).unwrap_or("") {
        "header" => {
            let text = plain(&text_of(&block["text"]));
            if !text.trim().is_empty() {
                body.push(
                    json!({"type": "TextBlock", "text": text, "wrap": true, "size": "Large", "weight": "Bolder"}),
                );
            }
        }
        "section" => {
            if let Some(text) = block.get("text") {
                text_blocks(&text_of(text), body);
            }
            if let Some(fields) = block.get("fields").and_then(Value::as_array) {
                let texts: Vec<String> = fields.iter().map(text_of).collect();
                fields_layout(&texts, body);
            }
            if let Some(url) = block.pointer("/accessory/url").and_then(Value::as_str) {
                actions.extend(open_url(&text_of(&block["accessory"]["text"]), url));
            }
        }
        "context" => {
            let parts: Vec<String> = block
                .get("elements")
                .and_then(Value::as_array)
                .map(|elements| elements.iter().map(text_of).filter(|t| !t.is_empty()).collect())
                .unwrap_or_default();
            if !parts.is_empty() {
                let text = markdown(&parts.join(" · "));
                body.push(json!({"type": "TextBlock", "text": text, "wrap": true, "size": "Small", "isSubtle": true}));
            }
        }
        "actions" => {
            for element in block.get("elements").and_then(Value::as_array).into_iter().flatten() {
                if let Some(url) = element.get("url").and_then(Value::as_str) {
                    actions.extend(open_url(&text_of(&element["text"]), url));
                }
            }
        }
        // The next element draws the line ([`separators`]).
        "divider" => body.push(Value::Null),
        "image" => {
            if let Some(url) = block.get("image_url").and_then(Value::as_str).filter(|u| u.starts_with("https://")) {
                let alt = block.get("alt_text").and_then(Value::as_str).unwrap_or("");
                body.push(json!({"type": "Image", "url": url, "altText": plain(alt)}));
            }
        }
        // A block of the sender's own Slack JSON that cards have no match for: its text, if it has any.
        _ => {
            let text = text_of(block.get("text").unwrap_or(&Value::Null));
            if !text.is_empty() {
                text_blocks(&text, body);
            }
        }
    }
}

/// A section's fields: a `FactSet` when each is `*Title*\nvalue` (as the renderers build them), else text.
fn fields_layout(fields: &[String], body: &mut Vec<Value>) {
    let facts: Option<Vec<Value>> = fields
        .iter()
        .map(|field| {
            let (title, value) = field.split_once('\n')?;
            let title = title.trim().strip_prefix('*')?.strip_suffix('*')?;
            Some(json!({"title": plain(title), "value": paragraphs(&markdown(value.trim()))}))
        })
        .collect();
    match facts {
        Some(facts) if !facts.is_empty() => body.push(fact_set(facts)),
        _ => fields.iter().for_each(|field| text_blocks(field, body)),
    }
}

/// A `FactSet` of at most [`MAX_FACTS`] facts, the rest counted.
fn fact_set(mut facts: Vec<Value>) -> Value {
    if facts.len() > MAX_FACTS {
        let more = facts.len() - (MAX_FACTS - 1);
        facts.truncate(MAX_FACTS - 1);
        facts.push(json!({"title": "…", "value": format!("{more} more fields not shown")}));
    }
    json!({"type": "FactSet", "facts": facts})
}

/// A legacy attachment (a sender's Slack JSON): its title, text and fields.
fn layout_attachment(attachment: &Value, body: &mut Vec<Value>, actions: &mut Vec<Value>) {
    let str_at = |key: &str| attachment.get(key).and_then(Value::as_str).unwrap_or("");
    if !str_at("pretext").is_empty() {
        text_blocks(str_at("pretext"), body);
    }
    if !str_at("title").is_empty() {
        body.push(json!({"type": "TextBlock", "text": plain(str_at("title")), "wrap": true, "weight": "Bolder"}));
        if let Some(url) = Some(str_at("title_link")).filter(|u| u.starts_with("http")) {
            actions.extend(open_url(str_at("title"), url));
        }
    }
    if !str_at("text").is_empty() {
        text_blocks(str_at("text"), body);
    }
    if let Some(fields) = attachment.get("fields").and_then(Value::as_array) {
        let facts: Vec<Value> = fields
            .iter()
            .map(|f| {
                let get = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
                json!({"title": plain(get("title")), "value": markdown(get("value"))})
            })
            .collect();
        if !facts.is_empty() {
            body.push(fact_set(facts));
        }
    }
    if let Some(blocks) = attachment.get("blocks").and_then(Value::as_array) {
        blocks.iter().for_each(|block| layout_block(block, body, actions));
    }
    if !str_at("footer").is_empty() {
        body.push(json!({"type": "TextBlock", "text": plain(str_at("footer")), "wrap": true, "size": "Small", "isSubtle": true}));
    }
}

/// A button to `url`, or nothing when it is not an `http(s)` URL fit for a link (Teams refuses a card with one).
fn open_url(label: &str, url: &str) -> Option<Value> {
    let url = crate::block_kit::safe_url(url)?;
    let label = truncate(&plain(label), 100, "…");
    let title = if label.trim().is_empty() { "Open".to_owned() } else { label };
    Some(json!({"type": "Action.OpenUrl", "title": title, "url": url}))
}

/// mrkdwn text as `TextBlock`s: code fences as monospace blocks, the rest as markdown.
fn text_blocks(text: &str, body: &mut Vec<Value>) {
    for (i, part) in text.split("```").enumerate() {
        let in_code = i % 2 == 1;
        let part = part.trim_matches('\n');
        if part.trim().is_empty() {
            continue;
        }
        if in_code {
            // CommonMark reads a single newline as a space: each line of code is a block of its own, close together.
            let lines: Vec<&str> = part.lines().collect();
            for (i, line) in lines.iter().take(MAX_CODE_LINES).enumerate() {
                // Markdown drops leading spaces: the indentation is kept as no-break spaces.
                let indent = line.len() - line.trim_start_matches(' ').len();
                let text = match line.trim() {
                    "" => "\u{a0}".to_owned(),
                    _ => format!("{}{}", "\u{a0}".repeat(indent), unescape(line.trim_start_matches(' '))),
                };
                let mut block = json!({"type": "TextBlock", "text": text, "wrap": true, "fontType": "Monospace"});
                if i > 0 {
                    block["spacing"] = "None".into();
                }
                body.push(block);
            }
            if lines.len() > MAX_CODE_LINES {
                let more = lines.len() - MAX_CODE_LINES;
                body.push(json!({"type": "TextBlock", "text": format!("… {more} more lines"), "wrap": true,
                    "fontType": "Monospace", "spacing": "None", "isSubtle": true}));
            }
        } else {
            body.push(json!({"type": "TextBlock", "text": paragraphs(&markdown(part)), "wrap": true}));
        }
    }
}

/// Each line a paragraph of its own: CommonMark reads a single newline as a space.
fn paragraphs(text: &str) -> String {
    text.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n\n")
}

/// Slack's escapes undone (`&lt;` …): card text is not HTML.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A plain text: escapes undone, emoji names as emoji.
fn plain(text: &str) -> String {
    emoji(&unescape(text))
}

/// Slack mrkdwn as card markdown: `*bold*` → `**bold**`, `<url|label>` → `[label](url)`, `<url>` → the URL, a
/// mention (`<!here>`, `<@U1>`) as its plain name, `~strike~` plain, inline code plain, escapes undone, emoji
/// names as emoji.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&bold(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&bold(&rest[open..]));
            rest = "";
            break;
        };
        let inner = &after[..close];
        let (target, label) = inner.split_once('|').unwrap_or((inner, ""));
        if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
            let label = if label.is_empty() { target } else { label };
            out.push_str(&format!("[{}]({target})", unescape(label).replace(['[', ']'], "")));
        } else if let Some(special) = target.strip_prefix('!') {
            out.push('@');
            out.push_str(special.split('^').next().unwrap_or(special));
        } else if let Some(user) = target.strip_prefix('@').or_else(|| target.strip_prefix('#')) {
            out.push('@');
            out.push_str(if label.is_empty() { user } else { label });
        } else {
            out.push_str(&unescape(inner));
        }
        rest = &after[close + 1..];
    }
    out.push_str(&bold(rest));
    emoji(&out)
}

/// `*bold*` → `**bold**` (a lone `*` stays), `~strike~` → plain, inline code's backticks dropped (cards have no
/// code spans), escapes undone.
fn bold(text: &str) -> String {
    let text = unescape(text).replace('`', "");
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '*' || c == '~' {
            // A pair on one line, around something that does not start or end with a space.
            let rest = &text[i + 1..];
            if let Some(end) = rest.find(c).filter(|&end| end > 0 && !rest[..end].contains('\n')) {
                let inner = &rest[..end];
                if !inner.starts_with(' ') && !inner.ends_with(' ') {
                    match c {
                        '*' => out.push_str(&format!("**{inner}**")),
                        _ => out.push_str(inner),
                    }
                    for _ in 0..inner.chars().count() + 1 {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// The emoji names the renderers use, as emoji (others stay as `:name:`).
fn emoji(text: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        (":red_circle:", "🔴"),
        (":large_green_circle:", "🟢"),
        (":white_circle:", "⚪"),
        (":grey_question:", "❔"),
        (":rotating_light:", "🚨"),
        (":card_index_dividers:", "🗂️"),
        (":white_check_mark:", "✅"),
        (":x:", "❌"),
        (":warning:", "⚠️"),
        (":hourglass_flowing_sand:", "⏳"),
        (":rocket:", "🚀"),
        (":tada:", "🎉"),
        (":no_entry_sign:", "🚫"),
        (":large_yellow_circle:", "🟡"),
        (":heavy_check_mark:", "✔️"),
        (":black_circle:", "⚫"),
        (":arrows_counterclockwise:", "🔄"),
        (":repeat:", "🔁"),
        (":lock:", "🔒"),
        (":package:", "📦"),
        (":bell:", "🔔"),
        (":calendar:", "📅"),
        (":memo:", "📝"),
        (":mag:", "🔍"),
        (":speech_balloon:", "💬"),
        (":twisted_rightwards_arrows:", "🔀"),
        (":git_merged:", "🔀"),
        (":eyes:", "👀"),
        (":fire:", "🔥"),
        (":construction:", "🚧"),
        (":stopwatch:", "⏱️"),
        (":information_source:", "ℹ️"),
        (":arrow_up:", "⬆️"),
        (":large_purple_circle:", "🟣"),
        (":ping_pong:", "🏓"),
        (":seedling:", "🌱"),
        (":wastebasket:", "🗑️"),
    ];
    if !text.contains(':') {
        return text.to_owned();
    }
    let mut out = text.to_owned();
    for (name, emoji) in NAMES {
        if out.contains(name) {
            out = out.replace(name, emoji);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack(text: &str, blocks: Option<Value>) -> SlackMessage {
        SlackMessage { channel: "teams:ops".into(), text: text.into(), blocks, attachments: None, thread_ts: None }
    }

    fn body(card: &Value) -> &Vec<Value> {
        card["attachments"][0]["content"]["body"].as_array().unwrap()
    }

    #[test]
    fn mrkdwn_becomes_card_markdown() {
        assert_eq!(
            markdown("*Metric* is <https://x.example/a?b=1|the graph> &lt;3"),
            "**Metric** is [the graph](https://x.example/a?b=1) <3"
        );
        assert_eq!(markdown("<!channel> and <@U123> and <#C1|ops>"), "@channel and @U123 and @ops");
        assert_eq!(markdown(":red_circle: ALARM 2 * 3 = 6"), "🔴 ALARM 2 * 3 = 6");
        assert_eq!(markdown("~gone~ <https://a.example>"), "gone [https://a.example](https://a.example)");
    }

    #[test]
    fn fields_become_facts_and_buttons_actions() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": ":red_circle: ALARM cpu &amp; disk"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Metric*\nAWS/EC2 CPUUtilization"},
                {"type": "mrkdwn", "text": "*Threshold*\n> 80"}
            ]},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Console"}, "url": "https://console.aws.amazon.com/x"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "event `abc`"}]},
        ]);
        let card = message(&slack("fallback", Some(blocks)), "");
        let body = body(&card);
        assert_eq!(body[0]["text"], "🔴 ALARM cpu & disk");
        assert_eq!(body[1]["type"], "FactSet");
        assert_eq!(body[1]["facts"][0]["title"], "Metric");
        assert_eq!(body[1]["facts"][1]["value"], "> 80");
        let actions = &card["attachments"][0]["content"]["actions"];
        assert_eq!(actions[0]["type"], "Action.OpenUrl");
        assert_eq!(actions[0]["url"], "https://console.aws.amazon.com/x");
        assert_eq!(card["attachments"][0]["content"]["version"], VERSION);
    }

    #[test]
    fn text_with_a_code_fence_is_text_then_monospace() {
        let card = message(&slack("Deploy\n```\n{\"a\": 1}\n```", None), "event `e`");
        let body = body(&card);
        assert_eq!(body[0]["text"], "Deploy");
        assert_eq!(body[1]["fontType"], "Monospace");
        assert_eq!(body[1]["text"], "{\"a\": 1}");
        assert_eq!(body.last().unwrap()["text"], "event `e`");
    }

    #[test]
    fn a_huge_message_is_cut_under_the_limit_and_says_so() {
        let huge = "x".repeat(300 * 1024);
        let many: Vec<Value> =
            (0..49).map(|i| crate::block_kit::section(&format!("{i} {}", "y".repeat(2_900)))).collect();
        for message in
            [message(&slack(&huge, None), "event `e`"), message(&slack("t", Some(Value::Array(many))), "event `e`")]
        {
            assert!(size(&message) <= MAX_BYTES, "{} bytes", size(&message));
            let body = body(&message);
            assert!(body.iter().any(|e| e["text"].as_str().is_some_and(|t| t.contains("Cut to fit"))), "{body:?}");
            assert_eq!(body.last().unwrap()["text"], "event `e`");
        }
    }

    #[test]
    fn senders_own_slack_json_of_any_size_fits() {
        let fields: Vec<Value> =
            (0..3_000).map(|i| json!({"type": "mrkdwn", "text": format!("*F{i}*\n{}", "v".repeat(50))})).collect();
        let buttons: Vec<Value> = (0..1_000)
            .map(|i| json!({"type": "button", "text": {"type": "plain_text", "text": format!("b{i}")}, "url": format!("https://x.example/{i}")}))
            .collect();
        let huge_label = json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "l".repeat(40 * 1024)}, "url": "https://x.example"}]}]);
        let bad_url = json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "x"}, "url": "javascript:alert(1)"}]}]);
        let mut attachment = slack("t", None);
        attachment.attachments = Some(
            json!([{"title": "t", "fields": (0..3_000).map(|i| json!({"title": format!("f{i}"), "value": "v".repeat(60)})).collect::<Vec<_>>()}]),
        );
        let cases = [
            slack("t", Some(json!([{"type": "section", "fields": fields}]))),
            slack("t", Some(json!([{"type": "actions", "elements": buttons}]))),
            slack("t", Some(huge_label)),
            slack("t", Some(bad_url)),
            attachment,
            slack("t", Some(json!([{"type": "header", "text": {"type": "plain_text", "text": ""}}]))),
        ];
        for case in &cases {
            let card = message(case, "event e");
            assert!(size(&card) <= MAX_BYTES, "{} bytes", size(&card));
            let content = &card["attachments"][0]["content"];
            for action in content["actions"].as_array().into_iter().flatten() {
                assert!(action["url"].as_str().unwrap().starts_with("https://"), "{action}");
                assert!(action["title"].as_str().unwrap().len() <= 104, "{action}");
            }
            assert!(content["actions"].as_array().is_none_or(|a| a.len() <= MAX_ACTIONS));
            for element in body(&card) {
                assert_ne!(element["text"], "", "no empty text: {element}");
                assert!(element["facts"].as_array().is_none_or(|f| f.len() <= MAX_FACTS), "facts capped");
            }
        }
    }

    #[test]
    fn code_keeps_its_lines_and_indentation() {
        let card = message(&slack("```\n{\n  \"a\": 1\n}\n```", None), "");
        let lines: Vec<&str> = body(&card).iter().map(|e| e["text"].as_str().unwrap()).collect();
        assert_eq!(lines, ["{", "\u{a0}\u{a0}\"a\": 1", "}"]);
        assert_eq!(body(&card)[1]["spacing"], "None");
        let long = format!("```\n{}\n```", (0..100).map(|i| i.to_string()).collect::<Vec<_>>().join("\n"));
        let card = message(&slack(&long, None), "");
        assert_eq!(body(&card).len(), MAX_CODE_LINES + 1);
        assert_eq!(body(&card).last().unwrap()["text"], "… 60 more lines");
    }

    #[test]
    fn a_legacy_attachment_keeps_its_title_text_and_fields() {
        let mut m = slack("fallback", None);
        m.attachments = Some(json!([{ "color": "#f00", "title": "Disk full", "text": "on *db-1*",
            "fields": [{"title": "Host", "value": "db-1"}], "footer": "nagios" }]));
        let card = message(&m, "");
        let body = body(&card);
        assert_eq!(body[0]["text"], "fallback");
        assert_eq!(body[1]["text"], "Disk full");
        assert_eq!(body[2]["text"], "on **db-1**");
        assert_eq!(body[3]["facts"][0]["title"], "Host");
        assert_eq!(body[4]["text"], "nagios");
    }
}
