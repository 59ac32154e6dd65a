//! Never acknowledge what is not durable: SIGKILL an ingress process while requests are in flight, right after
//! it answered 2xx; every acknowledged event is found intact and deliverable when the store is reopened.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use eventfleet_schema::{EventId, Status};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore};
use support::{run_ok, spawn_listening};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_of_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "create", "--name", "k", "--channel", "#c"])).unwrap();
    let hook_id = created["id"].as_str().unwrap().to_owned();
    let (mut ingress, base) = spawn_listening(data, &["ingress", "--listen", "127.0.0.1:0"], &[]);

    // 200 concurrent senders; the process is killed as soon as 50 have been acknowledged, with the rest in flight.
    let http = reqwest::Client::new();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<EventId>();
    for i in 0..200 {
        let (http, url, acked_tx) = (http.clone(), format!("{base}/hooks/{hook_id}"), acked_tx.clone());
        tokio::spawn(async move {
            let resp =
                http.post(url).header("content-type", "application/json").body(format!(r#"{{"n":{i}}}"#)).send().await;
            if let Ok(resp) = resp
                && resp.status() == 202
                && let Ok(body) = resp.json::<serde_json::Value>().await
            {
                let _ = acked_tx.send(EventId::parse(body["event_id"].as_str().unwrap_or("")).unwrap());
            }
        });
    }
    drop(acked_tx);
    let mut acked = HashSet::new();
    while acked.len() < 50 {
        let id = tokio::time::timeout(Duration::from_secs(30), acked_rx.recv())
            .await
            .expect("acknowledgements arrive")
            .expect("senders alive");
        acked.insert(id);
    }
    ingress.kill().expect("SIGKILL");
    ingress.wait().unwrap();
    // Answers that raced the kill were also acknowledged: collect them too.
    while let Ok(Some(id)) = tokio::time::timeout(Duration::from_millis(500), acked_rx.recv()).await {
        acked.insert(id);
    }

    let store = EmbeddedStore::open_dir(data, EmbeddedOptions::default()).unwrap().into_store();
    let mut delivered = HashSet::new();
    loop {
        let got = store.queue.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            let v1 = m.envelope.as_v1();
            assert!(v1.body.as_text().is_some_and(|b| b.starts_with(r#"{"n":"#)), "body intact");
            delivered.insert(m.envelope.event_id());
            store.queue.delete(&m.receipt).await.unwrap();
        }
    }
    let lost: Vec<_> = acked.difference(&delivered).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost: {lost:?}", lost.len());
    for id in &acked {
        let record = store.idempotency.find_by_event(*id).await.unwrap().expect("idempotency record");
        assert_eq!(record.status, Status::Enqueued);
    }
}
