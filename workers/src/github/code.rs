//! Code changes: pushes, pull requests, releases, issues.

use serde_json::Value;

use super::{Summary, bold, escape, first_line, number, short_sha, text};

/// Commits named in a push message.
const COMMITS_SHOWN: usize = 5;

/// `push`: "3 commits pushed to `main`" (or a branch or tag created, deleted, force-pushed), the commits.
pub fn push(p: &Value) -> Summary {
    let reference = text(p, "/ref").unwrap_or_default();
    let (what, name) = match reference.strip_prefix("refs/tags/") {
        Some(tag) => ("tag", tag.to_owned()),
        None => ("branch", reference.strip_prefix("refs/heads/").unwrap_or(&reference).to_owned()),
    };
    let commits = p["commits"].as_array().map(Vec::as_slice).unwrap_or_default();
    let count = p["size"].as_u64().map_or(commits.len(), |n| n as usize).max(commits.len());
    let (marker, headline) = if p["deleted"] == true {
        (":wastebasket:", format!("{what} {} deleted", bold(&name)))
    } else if p["created"] == true && count == 0 {
        (":seedling:", format!("{what} {} created", bold(&name)))
    } else {
        let plural = if count == 1 { "commit" } else { "commits" };
        let verb = if p["forced"] == true { "force-pushed" } else { "pushed" };
        (":arrow_up:", format!("{count} {plural} {verb} to {}", bold(&name)))
    };
    let mut details: Vec<String> = commits
        .iter()
        .take(COMMITS_SHOWN)
        .map(|c| {
            let sha = c["id"].as_str().unwrap_or_default();
            let author = c["author"]["username"].as_str().or_else(|| c["author"]["name"].as_str()).unwrap_or("");
            let line = first_line(c["message"].as_str().unwrap_or_default(), 120);
            match c["url"].as_str() {
                Some(url) => format!(
                    "{} {line} — {}",
                    super::link(url, &sha.chars().take(7).collect::<String>()),
                    escape(author)
                ),
                None => format!("{} {line} — {}", short_sha(sha), escape(author)),
            }
        })
        .collect();
    if count > COMMITS_SHOWN {
        details.push(format!("… and {} more", count - COMMITS_SHOWN));
    }
    Summary {
        marker: marker.into(),
        headline: headline[..1].to_uppercase() + &headline[1..],
        url: text(p, "/compare").or_else(|| text(p, "/head_commit/url")),
        reference: Some(name).filter(|n| !n.is_empty()),
        sender: text(p, "/sender/login").or_else(|| text(p, "/pusher/name")),
        details,
        ..Summary::default()
    }
}

/// `pull_request`: "PR #12 *Fix the cache* opened (draft)", head → base, size.
pub fn pull_request(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let merged = p.pointer("/pull_request/merged") == Some(&Value::Bool(true));
    let (marker, words) = match action.as_str() {
        "closed" if merged => (":large_purple_circle:", "merged".to_owned()),
        "closed" => (":red_circle:", "closed without merging".to_owned()),
        "opened" | "reopened" | "ready_for_review" => (":large_green_circle:", action.replace('_', " ")),
        "review_requested" => {
            let who = text(p, "/requested_reviewer/login")
                .or_else(|| text(p, "/requested_team/name"))
                .map(|w| format!(" from {}", escape(&w)))
                .unwrap_or_default();
            (":eyes:", format!("review requested{who}"))
        }
        other => (":twisted_rightwards_arrows:", escape(&other.replace('_', " "))),
    };
    let num = number(p, "/pull_request/number").or_else(|| number(p, "/number")).unwrap_or_default();
    let title = text(p, "/pull_request/title").unwrap_or_default();
    let draft = if p.pointer("/pull_request/draft") == Some(&Value::Bool(true)) { " (draft)" } else { "" };
    let mut details = Vec::new();
    let (adds, dels, files) = (
        number(p, "/pull_request/additions"),
        number(p, "/pull_request/deletions"),
        number(p, "/pull_request/changed_files"),
    );
    if let (Some(a), Some(d), Some(f)) = (adds, dels, files) {
        details.push(format!("+{a} −{d} in {f} files"));
    }
    if action == "labeled"
        && let Some(label) = text(p, "/label/name")
    {
        details.push(format!("label {}", super::code(&label)));
    }
    let reference = match (text(p, "/pull_request/head/ref"), text(p, "/pull_request/base/ref")) {
        (Some(head), Some(base)) => Some(format!("{head} → {base}")),
        (head, base) => head.or(base),
    };
    Summary {
        marker: marker.into(),
        headline: format!("PR #{num} {} {words}{draft}", bold(&title)),
        url: text(p, "/pull_request/html_url"),
        reference,
        details,
        ..Summary::default()
    }
}

/// `release`: "Release *v1.2.0* published (pre-release)".
pub fn release(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let tag = text(p, "/release/tag_name").unwrap_or_default();
    let name = text(p, "/release/name").unwrap_or_else(|| tag.clone());
    let pre = if p.pointer("/release/prerelease") == Some(&Value::Bool(true)) { " (pre-release)" } else { "" };
    let mut details = Vec::new();
    if let Some(body) = text(p, "/release/body") {
        details.push(first_line(&body, 300));
    }
    Summary {
        marker: (if action == "deleted" { ":wastebasket:" } else { ":package:" }).into(),
        headline: format!("Release {} {}{pre}", bold(&name), escape(&action.replace('_', " "))),
        url: text(p, "/release/html_url"),
        reference: Some(tag).filter(|t| !t.is_empty()),
        sender: text(p, "/sender/login").or_else(|| text(p, "/release/author/login")),
        details,
        ..Summary::default()
    }
}

/// `issues`: "Issue #7 *Login fails* opened", its labels.
pub fn issues(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let num = number(p, "/issue/number").unwrap_or_default();
    let title = text(p, "/issue/title").unwrap_or_default();
    let marker = match action.as_str() {
        "opened" | "reopened" => ":large_green_circle:",
        "closed" => ":white_check_mark:",
        "deleted" => ":wastebasket:",
        _ => ":memo:",
    };
    let mut words = escape(&action.replace('_', " "));
    match action.as_str() {
        "assigned" | "unassigned" => {
            if let Some(who) = text(p, "/assignee/login") {
                words.push_str(&format!(" {} {}", if action == "assigned" { "to" } else { "from" }, escape(&who)));
            }
        }
        "labeled" | "unlabeled" => {
            if let Some(label) = text(p, "/label/name") {
                words.push_str(&format!(" {}", super::code(&label)));
            }
        }
        "milestoned" | "demilestoned" => {
            if let Some(m) = text(p, "/milestone/title").or_else(|| text(p, "/issue/milestone/title")) {
                words.push_str(&format!(" {}", escape(&m)));
            }
        }
        _ => {}
    }
    let labels: Vec<String> = p
        .pointer("/issue/labels")
        .and_then(Value::as_array)
        .map(|ls| ls.iter().filter_map(|l| l["name"].as_str()).take(10).map(super::code).collect())
        .unwrap_or_default();
    Summary {
        marker: marker.into(),
        headline: format!("Issue #{num} {} {words}", bold(&title)),
        url: text(p, "/issue/html_url"),
        details: if labels.is_empty() { Vec::new() } else { vec![format!("labels {}", labels.join(" "))] },
        ..Summary::default()
    }
}
