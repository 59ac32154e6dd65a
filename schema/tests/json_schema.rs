//! The checked-in JSON Schema of the envelope must match the code.

use std::path::PathBuf;

#[test]
fn checked_in_envelope_schema_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/envelope.schema.json");
    let generated = eventfleet_schema::envelope_json_schema();
    if std::env::var_os("EVENTFLEET_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema file");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/schema/envelope.schema.json is stale; regenerate it with \
         `EVENTFLEET_UPDATE_SCHEMA=1 cargo test -p eventfleet-schema --test json_schema`"
    );
}

#[test]
fn schema_names_every_source_and_the_version_tag() {
    let schema: serde_json::Value = serde_json::from_str(&eventfleet_schema::envelope_json_schema()).unwrap();
    let text = schema.to_string();
    for needle in
        ["\"slack\"", "\"github\"", "\"hook\"", "\"sns\"", "\"schedule\"", "\"digest\"", "\"version\"", "traceparent"]
    {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}
