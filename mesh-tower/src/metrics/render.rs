//! The Prometheus text format.
//!
//! Rendering copies the series handles out under the read locks and formats after releasing
//! them, so that a scrape never holds up a request that registers a new series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::Key;
use parking_lot::RwLock;

use super::registry::{Registry, Table};

/// What a family's `# TYPE` line says.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Writes `# HELP`/`# TYPE` once per family.
struct Headers<'a> {
    help: &'a HashMap<String, String>,
    last: String,
}

// === impl Registry ===

impl Registry {
    /// Renders every metric in the Prometheus text format, sorted by name and labels.
    pub fn render(&self) -> String {
        let counters = snapshot(&self.inner.counters);
        let gauges = snapshot(&self.inner.gauges);
        let histograms = snapshot(&self.inner.histograms);
        let help = self.inner.help.read().clone();
        let mut headers = Headers {
            help: &help,
            last: String::new(),
        };
        let mut out = String::new();
        for (key, c) in &counters {
            headers.write(&mut out, key.name(), Kind::Counter);
            let value = c.0.load(Ordering::Relaxed);
            let _ = writeln!(out, "{}{} {value}", key.name(), labels(key, None));
        }
        for (key, g) in &gauges {
            headers.write(&mut out, key.name(), Kind::Gauge);
            let _ = writeln!(out, "{}{} {}", key.name(), labels(key, None), g.get());
        }
        for (key, h) in &histograms {
            headers.write(&mut out, key.name(), Kind::Histogram);
            let name = key.name();
            let mut cumulative = 0;
            for (bound, n) in h.bounds.iter().zip(h.buckets.iter()) {
                cumulative += n.load(Ordering::Relaxed);
                let le = format!("{bound}");
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(key, Some(&le)));
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{} {count}", labels(key, Some("+Inf")));
            let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
            let _ = writeln!(out, "{name}_sum{} {sum}", labels(key, None));
            let _ = writeln!(out, "{name}_count{} {count}", labels(key, None));
        }
        out
    }
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

impl Headers<'_> {
    fn write(&mut self, out: &mut String, name: &str, kind: Kind) {
        if self.last == name {
            return;
        }
        if let Some(h) = self.help.get(name) {
            let _ = writeln!(out, "# HELP {name} {h}");
        }
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        name.clone_into(&mut self.last);
    }
}

/// The series of a table, sorted by name and labels, copied out under its read lock.
fn snapshot<T>(table: &RwLock<Table<T>>) -> Vec<(Key, Arc<T>)> {
    let mut v: Vec<(Key, Arc<T>)> = table
        .read()
        .series
        .iter()
        .map(|(k, c)| (k.clone(), Arc::clone(c)))
        .collect();
    v.sort_by(|a, b| {
        a.0.name().cmp(b.0.name()).then_with(|| {
            a.0.labels()
                .map(|l| (l.key(), l.value()))
                .cmp(b.0.labels().map(|l| (l.key(), l.value())))
        })
    });
    v
}

fn labels(key: &Key, le: Option<&str>) -> String {
    let mut out = String::new();
    let mut sep = '{';
    for l in key.labels() {
        let _ = write!(out, "{sep}{}=\"{}\"", l.key(), escape(l.value()));
        sep = ',';
    }
    if let Some(le) = le {
        let _ = write!(out, "{sep}le=\"{le}\"");
    }
    if !out.is_empty() {
        out.push('}');
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use metrics::Label;

    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_with_linkerd_bounds() {
        let r = Registry::new();
        let h = r.histogram(
            "response_latency_ms",
            vec![Label::new("direction", "inbound")],
        );
        h.record(0.5);
        h.record(3.0);
        h.record(70_000.0);
        let text = r.render();
        for want in [
            "# TYPE response_latency_ms histogram",
            "response_latency_ms_bucket{direction=\"inbound\",le=\"1\"} 1",
            "response_latency_ms_bucket{direction=\"inbound\",le=\"3\"} 2",
            "response_latency_ms_bucket{direction=\"inbound\",le=\"50000\"} 2",
            "response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} 3",
            "response_latency_ms_count{direction=\"inbound\"} 3",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        let r = Registry::new();
        r.counter("x_total", vec![Label::new("a", "q\"uo\\te\n")])
            .increment(1);
        assert!(r.render().contains("x_total{a=\"q\\\"uo\\\\te\\n\"} 1"));
    }

    #[test]
    fn unlabelled_series_render_bare() {
        let r = Registry::new();
        r.counter("x_total", vec![]).increment(3);
        assert!(r.render().contains("\nx_total 3\n"), "{}", r.render());
    }
}
