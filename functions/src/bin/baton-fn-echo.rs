//! `baton-fn-echo`: answers with the request's method, path, query, selected headers and
//! body as JSON. Headers echoed: `content-type`, `user-agent`, the W3C trace context
//! (`traceparent`, `tracestate`) and every `x-*` header.

use baton_functions::{Call, json, run};
use hyper::StatusCode;

fn main() {
    run(|call: Call| async move {
        let headers: serde_json::Map<String, serde_json::Value> = call
            .head
            .headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                matches!(name, "content-type" | "user-agent" | "traceparent" | "tracestate") || name.starts_with("x-")
            })
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into()))
            .collect();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "method": call.head.method.as_str(),
                "path": call.head.uri.path(),
                "query": call.head.uri.query().unwrap_or(""),
                "headers": headers,
                "body": String::from_utf8_lossy(&call.body),
            }),
        )
    });
}
