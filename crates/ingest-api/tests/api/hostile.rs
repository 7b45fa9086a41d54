//! Hostile input, table-driven: every row is one request a broken or malicious client could
//! send, with the status it must get, a substring of the message that says why, and how many
//! events it may store (nothing, for every refused request). No row may end in a 5xx.

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{ACME_KEY, GLOBEX_KEY, TestApp};
use crate::ingest::event;

const JSON: (&str, &str) = ("content-type", "application/json");
const ACME: (&str, &str) = ("x-api-key", ACME_KEY);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A valid event as bytes with `field` set to the raw JSON text `raw` (which may be
/// something `serde_json::Value` cannot hold, like `NaN` or a lone surrogate escape).
fn event_with_raw(field: &str, raw: &str) -> Vec<u8> {
    let mut e = event("hostile");
    e[field] = json!("__RAW__");
    serde_json::to_string(&e)
        .unwrap()
        .replace("\"__RAW__\"", raw)
        .into_bytes()
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// One hostile request and what it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    /// A substring of the response's `message`.
    message: &'static str,
    /// A substring of the response's `errors`, serialized (per-item problems), if any.
    errors: Option<&'static str>,
    /// Events the request stores.
    stored: i64,
}

fn refused(
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    message: &'static str,
    errors: Option<&'static str>,
) -> Case {
    Case {
        name,
        path: "/api/v1/logs",
        headers: vec![JSON, ACME],
        body,
        status,
        message,
        errors,
        stored: 0,
    }
}

fn cases() -> Vec<Case> {
    let valid = bytes(&event("ok"));
    let mut nested_arrays = vec![b'['; 100_000];
    nested_arrays.extend(vec![b']'; 100_000]);
    let deep_object = {
        let depth = 10_000;
        let inner = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        event_with_raw("comment", &inner)
    };
    let gzipped_nesting = {
        let mut nested = vec![b'['; 4_000_000];
        nested.extend(vec![b']'; 4_000_000]);
        gzip(&nested)
    };
    let deep_in_setting = {
        let depth = 50_000;
        let inner = format!("{{\"device\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        event_with_raw("setting", &inner)
    };
    let too_many = bytes(&Value::Array((0..1001).map(|_| event("many")).collect()));
    let oversize = {
        let mut e = event("big");
        e["comment"] = json!("x".repeat(1024 * 1024));
        bytes(&e)
    };
    let almost_1mib_string = {
        let mut e = event("big");
        e["comment"] = json!("x".repeat(1_000_000));
        bytes(&e)
    };
    let with_bom = [b"\xEF\xBB\xBF".as_slice(), &valid].concat();
    let invalid_utf8 = {
        let text = String::from_utf8(valid.clone()).unwrap();
        let (head, tail) = text.split_once("\"ok\"").unwrap();
        [head.as_bytes(), b"\"o\xFF\xFEk\"", tail.as_bytes()].concat()
    };
    let mut control_in_key = event("ctl");
    control_in_key["sub\u{1}scriber"] = json!("x");
    let duplicate_key = {
        let text = String::from_utf8(bytes(&event("dup"))).unwrap();
        text.replacen("{", "{\"subscriber\":\"first\",", 1)
            .into_bytes()
    };
    let mut year_one = event("y1");
    year_one["timestamp"] = json!("0001-01-01T00:00:00Z");
    let mut year_99999 = event("y99999");
    year_99999["timestamp"] = json!("99999-01-01T00:00:00Z");
    let mut year_9999 = event("y9999");
    year_9999["timestamp"] = json!("9999-12-31T23:59:59Z");
    let mut nan_timestamp = event("nan");
    nan_timestamp["timestamp"] = json!("NaN");
    let mut numeric_timestamp = event("num");
    numeric_timestamp["timestamp"] = json!(1_752_056_100);
    let mut nul_in_field = event("nul");
    nul_in_field["subscriber"] = json!("user\u{0}1");
    let mut tenant_field = event("t");
    tenant_field["tenant"] = json!("acme");
    let wrong_types = json!({
        "timestamp": 5, "subscriber": [], "assetId": {}, "interaction": true,
        "ratingEquivalent": "0.5", "setting": "web"
    });

    vec![
        refused(
            "malformed JSON",
            b"{\"timestamp\": ".to_vec(),
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "trailing garbage",
            [valid.as_slice(), b" }"].concat(),
            400,
            "trailing characters",
            None,
        ),
        refused(
            "wrong types everywhere",
            bytes(&wrong_types),
            400,
            "the event is invalid",
            Some("an RFC 3339 string"),
        ),
        refused(
            "100k nested arrays: skipped without recursion, a per-item error",
            nested_arrays,
            400,
            "the event is invalid",
            Some("must be an interaction object, got an array"),
        ),
        refused(
            "10k nested objects in a field: a per-item error",
            deep_object,
            400,
            "the event is invalid",
            Some("must be a string, got an object"),
        ),
        Case {
            headers: vec![JSON, ACME, ("content-encoding", "gzip")],
            ..refused(
                "4M nested arrays, gzipped under the decompressed cap",
                gzipped_nesting,
                400,
                "the event is invalid",
                Some("got an array"),
            )
        },
        refused(
            "50k nested arrays in setting.device",
            deep_in_setting,
            400,
            "the event is invalid",
            Some("setting.device"),
        ),
        refused(
            "more than MAX_BATCH_EVENTS",
            too_many,
            413,
            "more than 1000 events",
            None,
        ),
        refused("body over the limit", oversize, 413, "larger than", None),
        Case {
            headers: vec![JSON, ACME, ("content-encoding", "gzip")],
            ..refused(
                "gzip bomb",
                gzip(&vec![b' '; 16 * 1024 * 1024]),
                413,
                "once decompressed",
                None,
            )
        },
        Case {
            headers: vec![JSON, ACME, ("content-encoding", "gzip")],
            ..refused(
                "gzip header, not gzip bytes",
                valid.clone(),
                400,
                "not valid gzip",
                None,
            )
        },
        Case {
            headers: vec![JSON, ACME, ("content-encoding", "br")],
            ..refused(
                "unsupported encoding",
                valid.clone(),
                415,
                "Content-Encoding",
                None,
            )
        },
        // (text/plain is the browser's beacon form on this endpoint: see protocol.rs.)
        Case {
            headers: vec![("content-type", "application/xml"), ACME],
            ..refused(
                "wrong content type",
                valid.clone(),
                415,
                "not supported",
                None,
            )
        },
        Case {
            headers: vec![ACME],
            ..refused(
                "no content type",
                valid.clone(),
                415,
                "missing Content-Type",
                None,
            )
        },
        Case {
            name: "escaped NUL in a field: a per-item error, the valid item is stored",
            status: 202,
            message: "Batch received",
            errors: Some("control characters"),
            stored: 1,
            ..refused(
                "",
                bytes(&json!([nul_in_field, event("fine")])),
                0,
                "",
                None,
            )
        },
        refused(
            "lone leading surrogate escape",
            event_with_raw("subscriber", "\"\\ud800\""),
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "lone trailing surrogate escape",
            event_with_raw("subscriber", "\"x\\udc00y\""),
            400,
            "not valid JSON",
            None,
        ),
        refused("invalid UTF-8", invalid_utf8, 400, "invalid UTF-8", None),
        refused(
            "invalid UTF-8 in an unknown field beside a valid event: nothing stored",
            [b"[".as_slice(), &valid, b",{\"x\":\"\xff\"}]"].concat(),
            400,
            "invalid UTF-8",
            None,
        ),
        refused(
            "UTF-8 byte order mark",
            with_bom,
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "year 0001",
            bytes(&year_one),
            400,
            "the event is invalid",
            Some("before 2000-01-01"),
        ),
        refused(
            "year 9999",
            bytes(&year_9999),
            400,
            "the event is invalid",
            Some("future"),
        ),
        refused(
            "year 99999",
            bytes(&year_99999),
            400,
            "the event is invalid",
            Some("RFC 3339"),
        ),
        refused(
            "timestamp \"NaN\"",
            bytes(&nan_timestamp),
            400,
            "the event is invalid",
            Some("RFC 3339"),
        ),
        refused(
            "timestamp as epoch seconds",
            bytes(&numeric_timestamp),
            400,
            "the event is invalid",
            Some("RFC 3339"),
        ),
        refused(
            "NaN token",
            event_with_raw("ratingEquivalent", "NaN"),
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "Infinity token",
            event_with_raw("ratingEquivalent", "Infinity"),
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "1e999 overflows f64",
            event_with_raw("ratingEquivalent", "1e999"),
            400,
            "number out of range",
            None,
        ),
        refused(
            "-1e999 overflows f64",
            event_with_raw("ratingEquivalent", "-1e999"),
            400,
            "number out of range",
            None,
        ),
        refused(
            "a 400-digit integer overflows f64 too",
            event_with_raw("ratingEquivalent", &"9".repeat(400)),
            400,
            "number out of range",
            None,
        ),
        refused(
            "a 300-digit integer is a number, out of the rating range",
            event_with_raw("ratingEquivalent", &"9".repeat(300)),
            400,
            "the event is invalid",
            Some("ratingEquivalent"),
        ),
        refused(
            "duplicate key",
            duplicate_key,
            400,
            "the event is invalid",
            Some("\"field\":\"subscriber\""),
        ),
        refused("empty body", Vec::new(), 400, "not valid JSON", None),
        refused(
            "whitespace only",
            b" \n\t ".to_vec(),
            400,
            "not valid JSON",
            None,
        ),
        refused(
            "a 1 MB string",
            almost_1mib_string,
            400,
            "the event is invalid",
            Some("comment"),
        ),
        refused(
            "control character in a key",
            bytes(&control_in_key),
            400,
            "the event is invalid",
            Some("is not a known field"),
        ),
        refused(
            "a tenant field cannot pick the tenant",
            bytes(&tenant_field),
            400,
            "the event is invalid",
            Some("tenant"),
        ),
        refused(
            "1000 nulls",
            bytes(&Value::Array(vec![Value::Null; 1000])),
            400,
            "all 1000 events are invalid",
            Some("\"index\":999"),
        ),
        refused(
            "empty array",
            b"[]".to_vec(),
            400,
            "the batch is empty",
            None,
        ),
        refused(
            "a JSON string",
            b"\"hello\"".to_vec(),
            400,
            "must be an interaction object or an array",
            None,
        ),
        refused(
            "a JSON number",
            b"42".to_vec(),
            400,
            "must be an interaction object or an array",
            None,
        ),
        refused(
            "JSON null",
            b"null".to_vec(),
            400,
            "must be an interaction object or an array",
            None,
        ),
        Case {
            path: "/api/v1/log",
            ..refused(
                "an array to the single-event endpoint",
                bytes(&json!([event("one")])),
                400,
                "takes one event object",
                None,
            )
        },
        Case {
            headers: vec![JSON],
            ..refused("no API key", valid.clone(), 401, "API key", None)
        },
        Case {
            headers: vec![JSON, ("x-api-key", "acme-key-012345678")],
            ..refused("a wrong API key", valid.clone(), 401, "API key", None)
        },
        Case {
            headers: vec![JSON, ("x-api-key", "")],
            ..refused("an empty API key", valid.clone(), 401, "API key", None)
        },
        Case {
            headers: vec![JSON, ("authorization", "Bearer ")],
            ..refused("an empty bearer token", valid.clone(), 401, "API key", None)
        },
    ]
}

#[tokio::test]
async fn hostile_requests_get_a_4xx_with_a_reason_and_store_nothing() {
    let app = TestApp::spawn().await;
    let mut failures = Vec::new();
    for case in cases() {
        let before = app.store.pending_event_count().await.unwrap();
        let response = app.post_raw(case.path, case.body, &case.headers).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let after = app.store.pending_event_count().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("");
        let errors = body["errors"].to_string();
        let wanted_status = if case.status == 202 {
            "success"
        } else {
            "error"
        };
        let ok = status == case.status
            && body["status"] == wanted_status
            && message.contains(case.message)
            && case.errors.is_none_or(|e| errors.contains(e))
            && after - before == case.stored;
        if !ok {
            let shown: String = text.chars().take(400).collect();
            failures.push(format!(
                "{}: got {status}, stored {}, body {shown}",
                case.name,
                after - before
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // The app is still well after all of it.
    let response = app.post("/api/v1/log", &event("after")).await;
    assert_eq!(response.status(), 202);
}

/// A valid key of one tenant writes only under that tenant, whatever the body says: globex's
/// events never land in acme's `eventId` space.
#[tokio::test]
async fn another_tenants_key_writes_only_under_that_tenant() {
    let app = TestApp::spawn().await;
    let mut e = event("cross");
    e["eventId"] = json!("shared-id");
    let post_as = async |key: &str, body: &Value| {
        let response = app
            .post_raw("/api/v1/log", bytes(body), &[JSON, ("x-api-key", key)])
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        (body["count"].as_u64(), body["duplicates"].as_u64())
    };
    assert_eq!(post_as(GLOBEX_KEY, &e).await, (Some(1), Some(0)));
    // acme's id space is untouched: the same id is new there.
    assert_eq!(post_as(ACME_KEY, &e).await, (Some(1), Some(0)));
    // And each tenant now sees it as its own duplicate.
    assert_eq!(post_as(GLOBEX_KEY, &e).await, (Some(0), Some(1)));
    assert_eq!(post_as(ACME_KEY, &e).await, (Some(0), Some(1)));
    assert_eq!(app.store.pending_event_count().await.unwrap(), 2);
}
