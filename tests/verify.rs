//! `eventfleet verify slack|github|sns`: exit 0 when valid, 1 with the reason on stderr when not.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

fn verify(args: &[&str], body: &[u8]) -> (i32, String, String) {
    let mut child = support::eventfleet()
        .arg("verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A usage error exits before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(body);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fixtures/sns")
}

#[test]
fn sns_fixtures_verify_at_their_time_and_not_today_nor_tampered() {
    let cert = fixtures().join("SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem");
    let cert = cert.to_str().unwrap();
    for name in
        ["notification-with-subject-v1.json", "subscription-confirmation-v1.json", "unsubscribe-confirmation-v2.json"]
    {
        let body = std::fs::read(fixtures().join(name)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let at = json["Timestamp"].as_str().unwrap();
        let (code, stdout, _) = verify(&["sns", "--cert", cert, "--at", at], &body);
        assert_eq!(code, 0, "{name}");
        assert!(stdout.contains("valid SNS signature"));
        let (code, _, stderr) = verify(&["sns", "--cert", cert], &body);
        assert_eq!(code, 1, "{name} today");
        assert!(stderr.contains("not valid at"), "{stderr}");
        let tampered = String::from_utf8(body.clone()).unwrap().replace("dongie-standard-topic", "other-topic");
        let (code, _, stderr) = verify(&["sns", "--cert", cert, "--at", at], tampered.as_bytes());
        assert_eq!(code, 1);
        assert!(stderr.contains("signature does not match"), "{stderr}");
    }
    let (code, _, stderr) = verify(&["sns", "--cert", cert, "--at", "yesterday"], b"{}");
    assert_ne!(code, 0);
    assert!(stderr.contains("--at"), "{stderr}");
}

#[test]
fn slack_and_github_documented_examples() {
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V\
&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=\
&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN\
&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let args = [
        "slack",
        "--secret",
        "8f742231b10e8888abcd99yyyzzz85a5",
        "--timestamp",
        "1531420618",
        "--signature",
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "--at",
        "1531420700",
    ];
    assert_eq!(verify(&args, body.as_bytes()).0, 0);
    let (code, _, stderr) = verify(&args[..7], body.as_bytes());
    assert_eq!(code, 1, "stale today");
    assert!(stderr.contains("away from now"), "{stderr}");
    assert_eq!(verify(&args, b"tampered").0, 1);

    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let github = ["github", "--secret", "It's a Secret to Everybody", "--signature", sig];
    assert_eq!(verify(&github, b"Hello, World!").0, 0);
    let (code, _, stderr) = verify(&github, b"Hello, World?");
    assert_eq!(code, 1);
    assert!(stderr.contains("does not match"));
}
