//! Rows to text: aligned tables as `linkerd viz` prints them, or JSON for scripts.

use std::fmt::Write as _;

use super::query::{EdgeRow, Golden, RouteRow, WorkloadRow};

/// `-o table|wide|json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    #[default]
    Table,
    Wide,
    Json,
}

/// Columns padded to their widest cell; the first column left-aligned, the rest right.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i == 0 {
                let _ = write!(line, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(line, "   {}{c}", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

pub(crate) fn percent(v: Option<f64>) -> String {
    dash(v, |v| format!("{:.2}%", v * 100.0))
}

pub(crate) fn ms(v: Option<f64>) -> String {
    dash(v, |v| format!("{}ms", (v * 10.0).round() / 10.0))
}

/// SUCCESS, RPS and the three latencies.
fn golden_cells(success: Option<f64>, g: &Golden) -> Vec<String> {
    let traffic = g.requests > 0.0;
    vec![
        percent(success),
        if traffic {
            format!("{:.1}rps", g.rps)
        } else {
            "-".into()
        },
        ms(g.latency_ms_p50),
        ms(g.latency_ms_p95),
        ms(g.latency_ms_p99),
    ]
}

fn json<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string_pretty(rows)
        .map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |s| s + "\n")
}

/// `mesh stat`.
pub(crate) fn workloads(rows: &[WorkloadRow], output: Output) -> String {
    if output == Output::Json {
        return json(rows);
    }
    let wide = output == Output::Wide;
    let mut header = vec![
        "NAME",
        "NAMESPACE",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ];
    if wide {
        header.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.name.clone(),
                r.namespace.clone(),
                dash(r.meshed, |m| format!("{m}")),
            ];
            c.extend(golden_cells(r.success_rate, &r.golden));
            c.push(dash(r.tcp_conn, |t| format!("{t}")));
            if wide {
                c.push(dash(r.read_bytes_per_sec, |b| format!("{b:.1}")));
                c.push(dash(r.write_bytes_per_sec, |b| format!("{b:.1}")));
            }
            c
        })
        .collect();
    table(&header, &cells)
}

/// `mesh routes`.
pub(crate) fn routes(rows: &[RouteRow], output: Output) -> String {
    if output == Output::Json {
        return json(rows);
    }
    let mut header = vec!["ROUTE", "DST"];
    let wide = output == Output::Wide;
    if wide {
        header.push("BACKEND");
    }
    header.extend([
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| wide || r.backend.is_none())
        .map(|r| {
            let mut c = vec![
                if r.route.is_empty() {
                    "-".into()
                } else {
                    r.route.clone()
                },
                r.dst.clone(),
            ];
            if wide {
                c.push(r.backend.clone().unwrap_or_else(|| "-".into()));
            }
            c.extend(golden_cells(r.success_rate, &r.golden));
            c
        })
        .collect();
    table(&header, &cells)
}

/// `mesh edges`.
pub(crate) fn edges(rows: &[EdgeRow], output: Output) -> String {
    if output == Output::Json {
        return json(rows);
    }
    let wide = output == Output::Wide;
    let mut header = vec!["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"];
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID"]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.src.clone(),
                r.dst.clone(),
                r.src_ns.clone(),
                r.dst_ns.clone(),
                if r.secured { "√".into() } else { "×".into() },
            ];
            if wide {
                c.push(r.client_id.clone().unwrap_or_else(|| "-".into()));
                c.push(r.server_id.clone().unwrap_or_else(|| "-".into()));
            }
            c
        })
        .collect();
    table(&header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_blank_what_is_unknown() {
        let row = WorkloadRow {
            namespace: "default".into(),
            name: "web".into(),
            meshed: Some(1.0),
            success_rate: Some(0.9),
            golden: Golden {
                requests: 100.0,
                successes: 90.0,
                rps: 10.0,
                latency_ms_p50: Some(1.5),
                latency_ms_p95: None,
                latency_ms_p99: None,
            },
            tcp_conn: Some(2.0),
            read_bytes_per_sec: None,
            write_bytes_per_sec: None,
        };
        let t = workloads(&[row], Output::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME   NAMESPACE   MESHED"), "{t}");
        assert!(lines[1].contains("90.00%"), "{t}");
        assert!(lines[1].contains("10.0rps"), "{t}");
        assert!(lines[1].contains("1.5ms"), "{t}");
        assert!(lines[1].ends_with("2"), "{t}");
        assert_eq!(
            lines[0].find("SUCCESS").map(|i| i + 7),
            lines[1].find('%').map(|i| i + 1)
        );
    }
}
