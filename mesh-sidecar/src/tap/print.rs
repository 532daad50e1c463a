//! One tapped request as `linkerd viz tap` prints it (`req`, `rsp`, `end` lines), or as one
//! JSON line.

use mesh_tower::metrics::Direction;
use mesh_tower::tap::TapEvent;

/// The three lines of a request: what was asked, the response headers, the end of the stream.
pub(super) fn lines(id: &str, ev: &TapEvent) -> String {
    let proxy = match ev.direction {
        Direction::Inbound => "in ",
        Direction::Outbound => "out",
    };
    let addr =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    // mTLS on the hop the event describes: the client's identity inbound, the server's
    // outbound.
    let tls = match ev.direction {
        Direction::Inbound => ev.client_id.is_some(),
        Direction::Outbound => ev.server_id.is_some(),
    };
    let head = format!(
        "id={id} proxy={proxy} src={} dst={} tls={tls}",
        addr(ev.src_addr),
        addr(ev.dst_addr)
    );
    let mut req = format!(
        "req {head} :method={} :authority={} :path={}",
        ev.method, ev.authority, ev.path
    );
    for (k, v) in &ev.headers {
        req.push_str(&format!(" {k}={v}"));
    }
    let status = ev.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let mut end = format!("end {head}");
    if let Some(g) = ev.grpc_status {
        end.push_str(&format!(" grpc-status={g}"));
    }
    end.push_str(&format!(
        " duration={}µs classification={}",
        micros(ev.duration_ms),
        ev.classification.as_str()
    ));
    if let Some(e) = &ev.error {
        end.push_str(&format!(" error={e}"));
    }
    format!(
        "{req}\nrsp {head} :status={status} latency={}µs\n{end}\n",
        micros(ev.latency_ms)
    )
}

fn micros(ms: f64) -> u64 {
    (ms * 1000.0).round() as u64
}

/// The event as one JSON line, with its stable field names.
pub(super) fn json_line(ev: &TapEvent) -> String {
    let mut s = serde_json::to_string(ev).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_linkerd_tap() {
        let ev: TapEvent = serde_json::from_str(
            r#"{"direction":"inbound","method":"GET","authority":"api:80","path":"/books",
            "status":200,"latency_ms":1.5,"duration_ms":2.25,"classification":"success",
            "src_addr":"127.0.0.1:5000","dst_addr":"127.0.0.1:8080",
            "client_id":"web.default.serviceaccount.identity.linkerd.cluster.local",
            "timestamp_ms":1}"#,
        )
        .unwrap();
        let text = lines("0:3", &ev);
        let want = "req id=0:3 proxy=in  src=127.0.0.1:5000 dst=127.0.0.1:8080 tls=true :method=GET :authority=api:80 :path=/books\n\
                    rsp id=0:3 proxy=in  src=127.0.0.1:5000 dst=127.0.0.1:8080 tls=true :status=200 latency=1500µs\n\
                    end id=0:3 proxy=in  src=127.0.0.1:5000 dst=127.0.0.1:8080 tls=true duration=2250µs classification=success\n";
        assert_eq!(text, want);
    }
}
