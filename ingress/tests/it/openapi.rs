//! `docs/openapi.json` describes exactly the router's routes, and each documented route is served.

use std::collections::BTreeSet;

use eventfleet_ingress::routes::ROUTES;
use serde_json::Value;

use crate::Server;

fn spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn openapi_lists_exactly_the_routes() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, routed);
    // Every $ref resolves.
    let text = spec.to_string();
    for r in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", &r[..r.find('"').unwrap()]);
        assert!(spec.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let s = Server::start().await;
    for (method, path) in ROUTES {
        let url = s.url(&path.replace("{hook_id}", "hk_probe"));
        let resp = match *method {
            "get" => s.http.get(&url).send().await.unwrap(),
            _ => s.http.post(&url).body("{}").send().await.unwrap(),
        };
        assert_ne!(resp.status().as_u16(), 405, "{method} {path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("no such route"), "{method} {path} fell through to the fallback");
    }
}
