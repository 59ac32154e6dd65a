//! `eventfleet hooks create|list|enable|disable|filter`.

use std::path::Path;
use std::process::ExitCode;

use eventfleet_schema::{HookFilter, HookId, HookKind, Webhook};
use serde_json::json;

use super::print_json;
use crate::cli::{FilterArgs, HookKindArg, HooksCommand, MessagesArg};
use crate::config::Config;

/// The file in the data directory where `dev`, `serve` and `ingress` write the URL they serve on.
pub(crate) const LISTEN_FILE: &str = "listening";

/// The base of printed hook URLs: `EVENTFLEET_PUBLIC_URL`, else `EVENTFLEET_LISTEN`, else where the last
/// process on this data directory served (its [`LISTEN_FILE`]), else the default `http://127.0.0.1:8080`.
pub(crate) fn hook_base(config: &Config, data_dir: &Path) -> String {
    let recorded = || {
        let text = std::fs::read_to_string(data_dir.join(LISTEN_FILE)).ok()?;
        Some(text.trim().to_owned()).filter(|t| t.starts_with("http://") || t.starts_with("https://"))
    };
    (config.public_url.clone())
        .or_else(|| config.listen.map(|a| format!("http://{a}")))
        .or_else(recorded)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
}

/// Runs a hooks command.
pub async fn run(config: &Config, data_dir: &Path, command: HooksCommand) -> anyhow::Result<ExitCode> {
    // Creating a hook may come before the first `dev` (the store is made then, and said so); every other hooks
    // command reads an existing store.
    let store = if matches!(command, HooksCommand::Create { .. }) {
        if crate::backend::require_store(config, data_dir).is_err() {
            eprintln!("note: no store in {} yet: created one", data_dir.display());
        }
        crate::backend::open(config, data_dir).await?
    } else {
        crate::backend::open_existing(config, data_dir).await?
    };
    let base = hook_base(config, data_dir);
    let view = |h: &Webhook| {
        let mut v = json!({
            "id": h.id, "url": format!("{base}/hooks/{}", h.id), "name": h.name, "channel": h.channel,
            "kind": h.kind, "active": h.active, "invocation_count": h.invocation_count,
            "created_by": h.created_by, "created_at": h.created_at, "has_secret": h.secret.is_some(),
        });
        if let Some(filter) = &h.filter {
            v["filter"] = json!(filter);
        }
        if let Some(group_key) = &h.group_key {
            v["group_key"] = json!(group_key);
        }
        v["messages"] = json!(messages(h));
        if let Some(secret) = &h.secret {
            v["secret"] = json!(secret);
        }
        v
    };
    match command {
        HooksCommand::Create { name, channel, kind, secret, by, filter, group_key, per_delivery } => {
            let kind = match kind {
                HookKindArg::Alert => HookKind::Alert,
                HookKindArg::Info => HookKind::Info,
            };
            let mut hook = new_hook(&name, &channel, kind, secret, parse_filter(filter)?, by, store.clock.now())?;
            hook.group_key = group_key;
            hook.per_delivery = per_delivery;
            store.webhooks.create(&hook).await?;
            print_json(&view(&hook))?;
        }
        HooksCommand::List(flag) => {
            let hooks = store.webhooks.list().await?;
            if flag.json {
                // Listing never reveals secrets; they are shown once, at creation.
                let list: Vec<_> = hooks
                    .iter()
                    .map(|h| {
                        let mut v = view(h);
                        v.as_object_mut().map(|o| o.remove("secret"));
                        v
                    })
                    .collect();
                print_json(&list)?;
            } else {
                say!("{:<36}  {:<8}  {:<6}  {:<20}  {:>8}  name", "id", "state", "kind", "channel", "calls");
                for h in hooks {
                    let state = if h.active { "enabled" } else { "disabled" };
                    let mut filter = h.filter.as_ref().map(describe).unwrap_or_default();
                    if h.per_delivery {
                        filter.push_str("  (a message per GitHub delivery)");
                    }
                    say!(
                        "{:<36}  {:<8}  {:<6}  {:<20}  {:>8}  {}{filter}",
                        h.id,
                        state,
                        h.kind.as_str(),
                        h.channel,
                        h.invocation_count,
                        h.name
                    );
                }
            }
        }
        HooksCommand::Filter { id, filter, clear } => {
            let filter = parse_filter(filter)?;
            if filter.is_none() && !clear {
                anyhow::bail!("give --only or --skip rules, or --clear to remove the filter");
            }
            let h = store.webhooks.set_filter(&HookId::from_raw(id), filter.as_ref()).await?;
            print_json(&json!({ "id": h.id, "filter": h.filter }))?;
        }
        HooksCommand::GroupKey { id, pointer, clear } => {
            if pointer.is_none() && !clear {
                anyhow::bail!("give a JSON pointer (like /service), or --clear to remove the group key");
            }
            let h = store.webhooks.set_group_key(&HookId::from_raw(id), pointer.as_deref()).await?;
            print_json(&json!({ "id": h.id, "group_key": h.group_key }))?;
        }
        HooksCommand::Messages { id, messages: choice } => {
            let h = store.webhooks.set_per_delivery(&HookId::from_raw(id), choice == MessagesArg::PerDelivery).await?;
            print_json(&json!({ "id": h.id, "messages": messages(&h) }))?;
        }
        HooksCommand::Enable { id } | HooksCommand::Disable { id } if id.trim().is_empty() => {
            anyhow::bail!("a hook id is required");
        }
        HooksCommand::Enable { id } => {
            let h = store.webhooks.set_active(&HookId::from_raw(id), true).await?;
            print_json(&json!({ "id": h.id, "active": h.active }))?;
        }
        HooksCommand::Disable { id } => {
            let h = store.webhooks.set_active(&HookId::from_raw(id), false).await?;
            print_json(&json!({ "id": h.id, "active": h.active }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A new hook, enabled, with a fresh id and (when asked) a fresh secret: what `hooks create` and the console's
/// form both register.
pub(crate) fn new_hook(
    name: &str,
    channel: &str,
    kind: HookKind,
    with_secret: bool,
    filter: Option<HookFilter>,
    by: String,
    now: eventfleet_schema::Timestamp,
) -> anyhow::Result<Webhook> {
    let (name, channel) = (name.trim(), channel.trim());
    if name.is_empty() || channel.is_empty() {
        anyhow::bail!("a hook needs a name and a channel");
    }
    // `#ops`, `teams:oncall` or both (`#ops+teams:oncall`); a Teams channel's webhook URL is the workers' setting.
    eventfleet_workers::targets::Targets::parse(channel).map_err(|why| anyhow::anyhow!("channel: {why}"))?;
    Ok(Webhook {
        id: HookId::new(),
        name: name.to_owned(),
        channel: channel.to_owned(),
        kind,
        active: true,
        secret: with_secret.then(|| hex::encode(rand::random::<[u8; 32]>())),
        invocation_count: 0,
        filter,
        group_key: None,
        per_delivery: false,
        created_by: by,
        created_at: now,
    })
}

/// How the hook posts GitHub runs, deployments and pull requests, as `hooks` commands say it.
fn messages(h: &Webhook) -> &'static str {
    if h.per_delivery { "per-delivery" } else { "living" }
}

/// The filter of `--only`/`--skip`, each rule checked; `None` without rules.
fn parse_filter(args: FilterArgs) -> anyhow::Result<Option<HookFilter>> {
    let filter = HookFilter { only: args.only, skip: args.skip };
    eventfleet_workers::github::filter::validate(&filter)?;
    Ok((!filter.is_empty()).then_some(filter))
}

/// `  (only a or b; skip c)` for the hooks table.
fn describe(filter: &HookFilter) -> String {
    let mut parts = Vec::new();
    if !filter.only.is_empty() {
        parts.push(format!("only {}", filter.only.join(" or ")));
    }
    if !filter.skip.is_empty() {
        parts.push(format!("skip {}", filter.skip.join(", ")));
    }
    format!("  ({})", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_channel_is_a_channel_list() {
        let now = eventfleet_schema::Timestamp::from_millis(1);
        let hook = |channel: &str| new_hook("deploys", channel, HookKind::Info, false, None, "t".into(), now);
        assert_eq!(hook(" #ops+teams:oncall ").unwrap().channel, "#ops+teams:oncall");
        assert!(hook("teams:oncall").is_ok());
        let err = hook("#ops+#dev").unwrap_err().to_string();
        assert!(err.contains("two Slack channels"), "{err}");
        let err = hook("teams:on call").unwrap_err().to_string();
        assert!(err.contains("teams:<name>"), "{err}");
        assert!(hook("").unwrap_err().to_string().contains("a name and a channel"));
    }
}
