//! Security alerts: how bad, which package or rule, where, and what fixes it.

use serde_json::Value;

use super::{Summary, bold, escape, first_line, number, text};

/// The marker of a severity (GitHub's words: critical, high, moderate/medium, low; code scanning's error,
/// warning, note).
fn severity_marker(severity: &str) -> &'static str {
    match severity.to_ascii_lowercase().as_str() {
        "critical" | "high" | "error" => ":rotating_light:",
        "moderate" | "medium" | "warning" => ":warning:",
        _ => ":information_source:",
    }
}

/// An alert closed one way or another reads as resolved, whatever its severity.
fn resolved(action: &str) -> bool {
    matches!(action, "fixed" | "dismissed" | "dismiss" | "resolve" | "resolved" | "closed_by_user" | "auto_dismissed")
}

fn words(action: &str) -> String {
    match action {
        "create" | "created" => "created".into(),
        "dismiss" => "dismissed".into(),
        "resolve" => "resolved".into(),
        "closed_by_user" => "closed".into(),
        "appeared_in_branch" => "appeared in a branch".into(),
        other => escape(&other.replace('_', " ")),
    }
}

/// `dependabot_alert`: "Dependabot alert #3 created: *Log injection in ansible*", severity and package.
pub fn dependabot_alert(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let severity = text(p, "/alert/security_advisory/severity")
        .or_else(|| text(p, "/alert/security_vulnerability/severity"))
        .unwrap_or_else(|| "unknown".into());
    let summary = text(p, "/alert/security_advisory/summary").unwrap_or_else(|| "a vulnerable dependency".into());
    let num = number(p, "/alert/number").map(|n| format!(" #{n}")).unwrap_or_default();
    let mut facts = vec![format!("severity *{}*", escape(&severity))];
    if let Some(package) =
        text(p, "/alert/security_vulnerability/package/name").or_else(|| text(p, "/alert/dependency/package/name"))
    {
        let ecosystem = text(p, "/alert/security_vulnerability/package/ecosystem").unwrap_or_default();
        let range = text(p, "/alert/security_vulnerability/vulnerable_version_range").unwrap_or_default();
        facts.push(format!("package {} {}", super::code(&format!("{ecosystem}/{package}")), escape(&range)));
    }
    if let Some(fixed) = text(p, "/alert/security_vulnerability/first_patched_version/identifier") {
        facts.push(format!("patched in {}", super::code(&fixed)));
    }
    let mut details = vec![facts.join(" · ")];
    if let Some(manifest) = text(p, "/alert/dependency/manifest_path") {
        details.push(format!("in {}", super::code(&manifest)));
    }
    if let Some(id) = text(p, "/alert/security_advisory/cve_id").or_else(|| text(p, "/alert/security_advisory/ghsa_id"))
    {
        details.push(escape(&id));
    }
    Summary {
        marker: (if resolved(&action) { ":white_check_mark:" } else { severity_marker(&severity) }).into(),
        headline: format!("Dependabot alert{num} {}: {}", words(&action), bold(&summary)),
        url: text(p, "/alert/html_url"),
        details,
        ..Summary::default()
    }
}

/// `code_scanning_alert`: "Code scanning alert #10 created: *SQL injection*", rule, tool, location.
pub fn code_scanning_alert(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let severity = text(p, "/alert/rule/security_severity_level")
        .or_else(|| text(p, "/alert/rule/severity"))
        .unwrap_or_else(|| "unknown".into());
    let rule = text(p, "/alert/rule/description")
        .or_else(|| text(p, "/alert/rule/name"))
        .or_else(|| text(p, "/alert/rule/id"))
        .unwrap_or_else(|| "a rule".into());
    let num = number(p, "/alert/number").map(|n| format!(" #{n}")).unwrap_or_default();
    let mut facts = vec![format!("severity *{}*", escape(&severity))];
    if let Some(id) = text(p, "/alert/rule/id") {
        facts.push(format!("rule {}", super::code(&id)));
    }
    if let Some(tool) = text(p, "/alert/tool/name") {
        facts.push(format!("by {}", escape(&tool)));
    }
    let mut details = vec![facts.join(" · ")];
    let path = text(p, "/alert/most_recent_instance/location/path");
    if let Some(path) = path {
        let line =
            number(p, "/alert/most_recent_instance/location/start_line").map(|l| format!(":{l}")).unwrap_or_default();
        details.push(format!("at {}", super::code(&format!("{path}{line}"))));
    }
    let reference = text(p, "/ref")
        .or_else(|| text(p, "/alert/most_recent_instance/ref"))
        .map(|r| r.strip_prefix("refs/heads/").map(str::to_owned).unwrap_or(r));
    Summary {
        marker: (if resolved(&action) { ":white_check_mark:" } else { severity_marker(&severity) }).into(),
        headline: format!("Code scanning alert{num} {}: {}", words(&action), bold(&rule)),
        url: text(p, "/alert/html_url"),
        reference,
        details,
        ..Summary::default()
    }
}

/// `secret_scanning_alert`: "Secret scanning alert #191 created: *Adafruit IO Key*" (never the secret).
pub fn secret_scanning_alert(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let kind = text(p, "/alert/secret_type_display_name")
        .or_else(|| text(p, "/alert/secret_type"))
        .unwrap_or_else(|| "a secret".into());
    let num = number(p, "/alert/number").map(|n| format!(" #{n}")).unwrap_or_default();
    let mut details = Vec::new();
    if let Some(resolution) = text(p, "/alert/resolution") {
        details.push(format!("resolution {}", super::code(&resolution)));
    }
    if p.pointer("/alert/push_protection_bypassed") == Some(&Value::Bool(true)) {
        details.push("pushed past push protection".into());
    }
    let url = text(p, "/alert/html_url")
        .or_else(|| text(p, "/repository/html_url").map(|r| format!("{r}/security/secret-scanning")));
    Summary {
        marker: (if resolved(&action) { ":white_check_mark:" } else { ":rotating_light:" }).into(),
        headline: format!("Secret scanning alert{num} {}: {}", words(&action), bold(&kind)),
        url,
        details,
        ..Summary::default()
    }
}

/// `repository_vulnerability_alert` (the older Dependabot alert): "Vulnerability in *rack* created".
pub fn repository_vulnerability_alert(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let package = text(p, "/alert/affected_package_name").unwrap_or_else(|| "a dependency".into());
    let severity = text(p, "/alert/severity").unwrap_or_else(|| "unknown".into());
    let mut facts = vec![format!("severity *{}*", escape(&severity))];
    if let Some(range) = text(p, "/alert/affected_range") {
        facts.push(format!("affects {}", super::code(&range)));
    }
    if let Some(fixed) = text(p, "/alert/fixed_in") {
        facts.push(format!("fixed in {}", super::code(&fixed)));
    }
    let mut details = vec![facts.join(" · ")];
    if let Some(id) = text(p, "/alert/external_identifier").or_else(|| text(p, "/alert/ghsa_id")) {
        details.push(escape(&id));
    }
    let url = text(p, "/repository/html_url")
        .map(|r| format!("{r}/security/dependabot"))
        .or_else(|| text(p, "/alert/external_reference"));
    Summary {
        marker: (if resolved(&action) { ":white_check_mark:" } else { severity_marker(&severity) }).into(),
        headline: format!("Vulnerability in {} {}", bold(&package), words(&action)),
        url,
        details,
        ..Summary::default()
    }
}

/// `security_advisory` (GitHub's advisory database, no repository): "Security advisory published: *…*".
pub fn security_advisory(p: &Value) -> Summary {
    let action = text(p, "/action").unwrap_or_default();
    let severity = text(p, "/security_advisory/severity").unwrap_or_else(|| "unknown".into());
    let summary = text(p, "/security_advisory/summary").unwrap_or_else(|| "an advisory".into());
    let ghsa = text(p, "/security_advisory/ghsa_id");
    let mut details = vec![format!("severity *{}*", escape(&severity))];
    let packages: Vec<String> = p
        .pointer("/security_advisory/vulnerabilities")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .take(5)
                .filter_map(|v| {
                    let name = v["package"]["name"].as_str()?;
                    let range = v["vulnerable_version_range"].as_str().unwrap_or_default();
                    Some(format!("{} {}", super::code(name), escape(range)))
                })
                .collect()
        })
        .unwrap_or_default();
    if !packages.is_empty() {
        details.push(format!("affects {}", packages.join(", ")));
    }
    if let Some(description) = text(p, "/security_advisory/description") {
        details.push(first_line(&description, 300));
    }
    let url = text(p, "/security_advisory/html_url")
        .or_else(|| ghsa.as_ref().map(|g| format!("https://github.com/advisories/{g}")));
    Summary {
        marker: (if action == "withdrawn" { ":white_circle:" } else { severity_marker(&severity) }).into(),
        headline: format!("Security advisory {}: {}", words(&action), bold(&summary)),
        url,
        reference: ghsa,
        details,
        ..Summary::default()
    }
}
