//! Our `mesh_tower::metrics::Registry` against `metrics-exporter-prometheus` (the issue asks
//! to use the exporter where it fits), on the per-request work the metrics layer does: one
//! `response_total` increment and one `response_latency_ms` observation, both labelled with
//! the eight labels of an outbound response, cycling through 1,000 distinct label sets.
//!
//! - `cached`: handles resolved once per label set and kept, as the layer keeps them in its
//!   series tables; a record is then the recorder's own atomic work.
//! - `lookup`: the handles looked up by `Key` on every record, as `metrics::counter!` does
//!   through a global recorder.
//! - `render`: one observation on each of the 1,000 series, then the Prometheus text of all.
//!
//! Both recorders are built the same way (no global install, Linkerd's latency buckets).
//! Before the timings it prints allocations per record and the heap the recorders hold after
//! 100,000 records without a scrape, counted by an instrumented global allocator.
//!
//! `cargo bench --bench metrics -- --warm-up-time 1 --measurement-time 3`
// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use mesh::tower::metrics::{LATENCY_BUCKETS_MS, Registry};
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERIES: usize = 1_000;

/// The two keys of one label set.
struct Keys {
    responses: Key,
    latency: Key,
}

/// The recorders under test.
enum Subject {
    Ours(Registry),
    Exporter(PrometheusRecorder, PrometheusHandle),
}

fn meta() -> Metadata<'static> {
    Metadata::new("bench", Level::INFO, None)
}

/// 1,000 outbound label sets: 100 Services of 10 endpoints each.
fn keys() -> Vec<Keys> {
    (0..SERIES)
        .map(|i| {
            let svc = format!("svc-{}", i % 100);
            let labels = vec![
                Label::new("direction", "outbound"),
                Label::new("authority", format!("{svc}.shop.svc.cluster.local:80")),
                Label::new("target_addr", format!("10.1.{}.{}:8080", i / 250, i % 250)),
                Label::new("tls", "true"),
                Label::new(
                    "server_id",
                    format!("{svc}.shop.serviceaccount.identity.linkerd.cluster.local"),
                ),
                Label::new("dst_service", svc),
                Label::new("dst_namespace", "shop"),
                Label::new("status_code", "200"),
            ];
            let mut with_class = labels.clone();
            with_class.push(Label::new("classification", "success"));
            Keys {
                responses: Key::from_parts("response_total", with_class),
                latency: Key::from_parts("response_latency_ms", labels),
            }
        })
        .collect()
}

// === impl Subject ===

impl Subject {
    fn ours() -> Self {
        Self::Ours(Registry::new())
    }

    fn exporter() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_MS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        Self::Exporter(recorder, handle)
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Ours(_) => "ours",
            Self::Exporter(..) => "exporter",
        }
    }

    fn recorder(&self) -> &dyn Recorder {
        match self {
            Self::Ours(r) => r,
            Self::Exporter(r, _) => r,
        }
    }

    fn handles(&self, keys: &[Keys]) -> Vec<(Counter, Histogram)> {
        let r = self.recorder();
        keys.iter()
            .map(|k| {
                (
                    r.register_counter(&k.responses, &meta()),
                    r.register_histogram(&k.latency, &meta()),
                )
            })
            .collect()
    }

    fn render(&self) -> String {
        match self {
            Self::Ours(r) => r.render(),
            Self::Exporter(_, h) => h.render(),
        }
    }
}

/// A latency that walks the buckets, so no one bucket's cache line stays hot.
fn latency(i: usize) -> f64 {
    (i % 97) as f64 * 3.7
}

/// `n` records through cached handles.
fn record_cached(handles: &[(Counter, Histogram)], n: usize) {
    for i in 0..n {
        let (c, h) = &handles[i % SERIES];
        c.increment(1);
        h.record(latency(i));
    }
}

/// `n` records, each looking its handles up by key.
fn record_lookup(r: &dyn Recorder, keys: &[Keys], n: usize) {
    for i in 0..n {
        let k = &keys[i % SERIES];
        r.register_counter(&k.responses, &meta()).increment(1);
        r.register_histogram(&k.latency, &meta()).record(latency(i));
    }
}

fn report_memory() {
    const N: usize = 10_000;
    const UNSCRAPED: usize = 100_000;
    let keys = keys();
    println!("per record (a counter increment and a histogram observation), {SERIES} series:");
    for s in [Subject::ours(), Subject::exporter()] {
        let handles = s.handles(&keys);
        record_cached(&handles, SERIES);
        let _ = s.render();
        let region = Region::new(GLOBAL);
        record_cached(&handles, N);
        let cached = region.change().allocations as f64 / N as f64;
        let region = Region::new(GLOBAL);
        record_lookup(s.recorder(), &keys, N);
        let lookup = region.change().allocations as f64 / N as f64;
        let _ = s.render();
        let region = Region::new(GLOBAL);
        record_cached(&handles, UNSCRAPED);
        let c = region.change();
        let held = c.bytes_allocated as i64 - c.bytes_deallocated as i64;
        let text = s.render();
        println!(
            "  {:9} allocations: cached {cached:.2}, lookup {lookup:.2}; heap grown by {UNSCRAPED} unscraped records: {} KiB; /metrics {} KiB",
            s.name(),
            held / 1024,
            text.len() / 1024
        );
    }
}

fn metrics(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("metrics");
    for s in [Subject::ours(), Subject::exporter()] {
        let handles = s.handles(&keys);
        g.bench_function(format!("{} cached", s.name()), |b| {
            let mut i = 0;
            b.iter(|| {
                let (c, h) = &handles[i % SERIES];
                c.increment(1);
                h.record(latency(i));
                i += 1;
            })
        });
        // Scrape now and then, as Prometheus would, so the exporter's pending samples do not
        // pile up over the whole measurement.
        g.bench_function(format!("{} lookup", s.name()), |b| {
            b.iter_custom(|n| {
                let start = std::time::Instant::now();
                record_lookup(s.recorder(), &keys, n as usize);
                let took = start.elapsed();
                black_box(s.render());
                took
            })
        });
        g.bench_function(format!("{} render {SERIES} series", s.name()), |b| {
            b.iter(|| {
                record_cached(&handles, SERIES);
                black_box(s.render())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, metrics);

fn main() {
    report_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
