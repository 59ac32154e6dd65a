//! Stamps the git commit into the build for `GET /version`.

fn main() {
    let sha = std::env::var("EVENTFLEET_GIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    });
    println!("cargo:rustc-env=EVENTFLEET_GIT_SHA={}", sha.unwrap_or_else(|| "unknown".into()));
    println!("cargo:rerun-if-env-changed=EVENTFLEET_GIT_SHA");
    // Rebuild when HEAD moves (a commit or a checkout).
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
