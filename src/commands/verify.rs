//! `eventfleet verify slack|github|sns < body`: why would the ingress reject this request? Exit 0 when valid,
//! 1 with the reason on stderr when not. Uses the very functions the ingress uses.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use eventfleet_schema::Timestamp;
use eventfleet_verify::sns::{CertStore, SigningCert, SnsMessage, check_cert_url};
use eventfleet_verify::{github, slack};

use crate::cli::VerifyCommand;

/// Runs a verify command.
pub async fn run(command: VerifyCommand) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).context("read the body from stdin")?;
    let verdict: Result<String, String> = match command {
        VerifyCommand::Slack { secret, timestamp, signature, at } => {
            let now = at_or_now(at.as_deref())?;
            slack::verify(secret.as_bytes(), Some(&timestamp), Some(&signature), &body, now)
                .map(|()| "valid Slack v0 signature".to_owned())
                .map_err(|e| e.to_string())
        }
        VerifyCommand::Github { secret, signature } => {
            github::verify_hub_signature_256(secret.as_bytes(), &body, Some(&signature))
                .map(|()| "valid X-Hub-Signature-256".to_owned())
                .map_err(|e| e.to_string())
        }
        VerifyCommand::Sns { cert, at } => {
            let now = at_or_now(at.as_deref())?;
            verify_sns(&body, cert, now).await
        }
    };
    match verdict {
        Ok(what) => {
            println!("{what}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn verify_sns(body: &[u8], cert: Option<std::path::PathBuf>, now: Timestamp) -> Result<String, String> {
    let message = SnsMessage::parse(body).map_err(|e| e.to_string())?;
    let url = check_cert_url(&message.signing_cert_url).map_err(|e| e.to_string())?;
    let cert = match cert {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            std::sync::Arc::new(SigningCert::from_pem(&pem).map_err(|e| e.to_string())?)
        }
        None => CertStore::new(None, Duration::from_secs(10)).get(&url).await.map_err(|e| e.to_string())?,
    };
    let method = message.verify(&cert, now).map_err(|e| e.to_string())?;
    Ok(format!("valid SNS signature ({method:?}, topic {}, message {})", message.topic_arn, message.message_id))
}

fn at_or_now(at: Option<&str>) -> anyhow::Result<Timestamp> {
    match at {
        Some(text) => Timestamp::parse(text).map_err(|e| anyhow::anyhow!("--at: {e}")),
        None => Ok(Timestamp::now_system()),
    }
}
