//! What a tap subscriber receives ([`TapEvent`]) and asks for ([`TapFilter`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_core::classify::Class;
use serde::{Deserialize, Serialize};

use crate::metrics::Direction;

/// One request and its response, as seen by a proxy: metadata only, never a body. Its JSON
/// names are stable; `mesh tap -o json` prints them one event per line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// Which way the request went through the proxy.
    pub direction: Direction,
    /// The request's method.
    pub method: String,
    /// The request's authority (`host:port`, or its Host header).
    pub authority: String,
    /// The request's path (no query string: it may carry secrets).
    pub path: String,
    /// The response status, or the status the mesh answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The stream's gRPC status, from its headers or trailers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Milliseconds from the request to the response headers.
    pub latency_ms: f64,
    /// Milliseconds from the request to the end of the response stream.
    pub duration_ms: f64,
    /// `success` or `failure`, as the metrics classify it.
    pub classification: Class,
    /// Why the stream failed, as the metrics `error` label says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_addr: Option<SocketAddr>,
    /// The server's address: where an inbound request arrived, or the endpoint an outbound one
    /// was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_addr: Option<SocketAddr>,
    /// The client's mesh identity (DNS form); absent when the client did not use mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The server's mesh identity (DNS form); absent when the server was not reached over mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The matched route's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The backend Service an outbound request was sent to (`name.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The destination's namespace (outbound) or this proxy's (inbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The destination's workload, a Service's name (outbound), or this proxy's (inbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The configured request headers (`--tap-header`) the request carried, with their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Which events a subscriber wants, decided in the proxy. Every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapFilter {
    /// The event's namespace (see [`TapEvent::namespace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The event's workload (see [`TapEvent::workload`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// A prefix of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The method, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The authority, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// What a tap client sends (`POST /tap`, JSON): its filter and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapRequest {
    /// Which events.
    #[serde(default)]
    pub filter: TapFilter,
    /// At most this many events per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<u32>,
    /// The stream ends after this many events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
}

// === impl TapFilter ===

impl TapFilter {
    /// Whether `event` is wanted.
    pub fn matches(&self, event: &TapEvent) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        same(&self.namespace, &event.namespace)
            && same(&self.workload, &event.workload)
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| event.path.starts_with(p.as_str()))
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&event.method))
            && self
                .authority
                .as_ref()
                .is_none_or(|a| *a == event.authority)
    }
}

#[cfg(test)]
pub(crate) fn sample(path: &str) -> TapEvent {
    TapEvent {
        direction: Direction::Inbound,
        method: "GET".into(),
        authority: "web.shop:80".into(),
        path: path.into(),
        status: Some(200),
        grpc_status: None,
        latency_ms: 1.0,
        duration_ms: 2.0,
        classification: Class::Success,
        error: None,
        src_addr: None,
        dst_addr: None,
        client_id: None,
        server_id: None,
        route: None,
        backend: None,
        namespace: Some("shop".into()),
        workload: Some("web".into()),
        timestamp_ms: 0,
        headers: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_every_given_field() {
        let ev = sample("/books/1");
        let f = |json: &str| serde_json::from_str::<TapFilter>(json).unwrap();
        let cases = [
            ("{}", true),
            (r#"{"path_prefix":"/books"}"#, true),
            (r#"{"path_prefix":"/authors"}"#, false),
            (r#"{"method":"get","namespace":"shop"}"#, true),
            (r#"{"method":"POST"}"#, false),
            (r#"{"workload":"web","authority":"web.shop:80"}"#, true),
            (r#"{"workload":"api"}"#, false),
        ];
        for (json, want) in cases {
            assert_eq!(f(json).matches(&ev), want, "{json}");
        }
        assert!(serde_json::from_str::<TapFilter>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn events_round_trip_with_stable_names() {
        let ev = sample("/");
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["direction"], "inbound");
        assert_eq!(json["classification"], "success");
        assert!(json.get("client_id").is_none());
        let back: TapEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
