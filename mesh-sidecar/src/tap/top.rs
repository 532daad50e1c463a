//! `mesh top`: tapped requests aggregated by (source, destination, method, path), sorted by
//! count, as `linkerd viz top` shows them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use mesh_tower::metrics::Direction;
use mesh_tower::tap::TapEvent;
use serde::Serialize;

use super::client::{TapTarget, Tapped};
use super::{TapError, TopCommand};
use crate::stat::print::{Output, ms, percent, table};

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct TopRow {
    source: String,
    destination: String,
    method: String,
    path: String,
    count: u64,
    best_ms: f64,
    worst_ms: f64,
    last_ms: f64,
    successes: u64,
    success_rate: f64,
}

/// Rows by their key.
#[derive(Debug, Default)]
struct Top(HashMap<(String, String, String, String), TopRow>);

// === impl Top ===

impl Top {
    fn add(&mut self, proxy: &TapTarget, ev: &TapEvent) {
        let (source, destination) = ends(proxy, ev);
        let key = (source, destination, ev.method.clone(), ev.path.clone());
        let row = self.0.entry(key.clone()).or_insert_with(|| TopRow {
            source: key.0,
            destination: key.1,
            method: key.2,
            path: key.3,
            count: 0,
            best_ms: f64::INFINITY,
            worst_ms: 0.0,
            last_ms: 0.0,
            successes: 0,
            success_rate: 0.0,
        });
        row.count += 1;
        row.best_ms = row.best_ms.min(ev.latency_ms);
        row.worst_ms = row.worst_ms.max(ev.latency_ms);
        row.last_ms = ev.latency_ms;
        row.successes += u64::from(!ev.classification.is_failure());
        row.success_rate = row.successes as f64 / row.count as f64;
    }

    /// Busiest first; ties in key order, so the table does not jump between refreshes.
    fn rows(&self) -> Vec<TopRow> {
        let mut rows: Vec<TopRow> = self.0.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.source, &a.destination, &a.path).cmp(&(&b.source, &b.destination, &b.path))
            })
        });
        rows
    }

    fn render(&self, output: Output) -> String {
        let rows = self.rows();
        if output == Output::Json {
            return serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n";
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.source.clone(),
                    r.destination.clone(),
                    r.method.clone(),
                    r.path.clone(),
                    r.count.to_string(),
                    ms(Some(r.best_ms)),
                    ms(Some(r.worst_ms)),
                    ms(Some(r.last_ms)),
                    percent(Some(r.success_rate)),
                ]
            })
            .collect();
        let header = [
            "SOURCE",
            "DESTINATION",
            "METHOD",
            "PATH",
            "COUNT",
            "BEST",
            "WORST",
            "LAST",
            "SUCCESS RATE",
        ];
        table(&header, &cells)
    }
}

/// Who called and who answered. Inbound: the client's service account (its address without
/// mTLS) calls the tapped workload; outbound: the tapped workload calls the destination's
/// workload (its authority when the mesh does not know it).
fn ends(proxy: &TapTarget, ev: &TapEvent) -> (String, String) {
    let short = |id: &str| id.split('.').next().unwrap_or(id).to_owned();
    let ip =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.ip().to_string());
    let name = proxy
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&proxy.name)
        .to_owned();
    match ev.direction {
        Direction::Inbound => (
            ev.client_id
                .as_deref()
                .map_or_else(|| ip(ev.src_addr), short),
            name,
        ),
        Direction::Outbound => (
            name,
            ev.workload.clone().unwrap_or_else(|| ev.authority.clone()),
        ),
    }
}

pub(super) async fn run(cmd: &TopCommand) -> Result<(), TapError> {
    let (targets, mut stream) = cmd.tap.open().await?;
    let live = cmd.duration.is_none() && std::io::stdout().is_terminal();
    let until = tokio::time::sleep(cmd.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(until);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let mut top = Top::default();
    loop {
        tokio::select! {
            next = stream.recv() => match next {
                Some(Ok(Tapped { proxy, event })) => top.add(&targets[proxy], &event),
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            _ = refresh.tick(), if live => {
                // Clear the screen and redraw, as `top` does.
                crate::out::print(&format!("\x1b[2J\x1b[H{}", top.render(cmd.output)));
            }
            () = &mut until => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    crate::out::print(&top.render(cmd.output));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, latency: f64, status: u16) -> TapEvent {
        serde_json::from_value(serde_json::json!({
            "direction": "inbound", "method": "GET", "authority": "api:80", "path": path,
            "status": status, "latency_ms": latency, "duration_ms": latency,
            "classification": if status >= 500 { "failure" } else { "success" },
            "client_id": "web.default.serviceaccount.identity.linkerd.cluster.local",
            "timestamp_ms": 0
        }))
        .unwrap()
    }

    #[test]
    fn rows_aggregate_and_sort_by_count() {
        let proxy = TapTarget {
            name: "default/api".into(),
            addr: "127.0.0.1:4190".parse().unwrap(),
            identity: mesh_core::Identity::new("cluster.local", "default", "api").unwrap(),
        };
        let mut top = Top::default();
        for (p, l, s) in [
            ("/a", 3.0, 200),
            ("/b", 1.0, 200),
            ("/a", 1.0, 500),
            ("/a", 2.0, 200),
        ] {
            top.add(&proxy, &event(p, l, s));
        }
        let rows = top.rows();
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(
            (a.source.as_str(), a.destination.as_str(), a.path.as_str()),
            ("web", "api", "/a")
        );
        assert_eq!(
            (a.count, a.best_ms, a.worst_ms, a.last_ms),
            (3, 1.0, 3.0, 2.0)
        );
        assert!((a.success_rate - 2.0 / 3.0).abs() < 1e-9);
        let text = top.render(Output::Table);
        assert!(text.starts_with("SOURCE"), "{text}");
        assert!(text.contains("66.67%"), "{text}");
    }
}
