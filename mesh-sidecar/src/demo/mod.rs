//! `mesh demo`: a local mesh on loopback, no root and no setup.
//!
//! An issuer (`mesh identity serve`) signs certificates for four workloads modelled on
//! emojivoto — `vote-bot` → `web` → `emoji`, and `web` → `voting` split 90/10 between
//! `voting-v1` and a faulty `voting-v2` — each behind its own real `mesh proxy` in explicit
//! mode, talking mTLS to each other. The apps run in this process ([`app`]); the proxies and
//! the issuer are child processes ([`setup`]). Every second it prints the table
//! `mesh stat --scrape` prints (the same code, over the last second's scrapes of each proxy's
//! `/metrics`); half-way the canary shifts to 50/50 by rewriting the route file the proxies
//! watch. Every child is stopped on exit, on Ctrl-C too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use crate::stat;
use crate::stat::print::{self, Output};
use crate::stat::query::{self, Kind, Resource, Scope, StatQuery};
use crate::stat::source::{Scraped, Source, Target, scrape_all};

mod app;
mod setup;

use app::AppStats;
use setup::{Mesh, route_yaml, write};

/// Run a local mesh on loopback and watch it work.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run (the canary shifts half-way).
    #[arg(long, default_value = "20s", value_parser = mesh_core::values::parse_duration)]
    duration: Duration,
    /// Requests per second from the traffic generator.
    #[arg(long, default_value_t = 50)]
    rps: u32,
    /// Share of voting-v2's requests that fail with 500.
    #[arg(long, default_value_t = 0.25)]
    fault_rate: f64,
    /// Keep the generated files (certificates, config, logs) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also serve the dashboard over the demo's proxies (default 127.0.0.1:50750); the URL is
    /// printed, no browser is opened.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:50750")]
    dashboard: Option<SocketAddr>,
}

pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    crate::out::block_on(runtime, demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(args.keep.clone(), &route_yaml(90, 10))?;
    let stats = Arc::new(AppStats::default());
    start_apps(&mesh, args.fault_rate, &stats).await?;
    mesh.start_proxies().await?;
    println!(
        "mesh demo: 5 workloads, each behind its own mesh proxy with an issued identity; traffic for {:?}",
        args.duration
    );
    println!(
        "  vote-bot → web → emoji, and web → voting-svc = 90% voting-v1 + 10% voting-v2 ({}% of v2's answers are 500s; retries mask them)\n",
        (args.fault_rate * 100.0).round()
    );
    // Traffic: vote-bot's app sends through vote-bot's outbound proxy to web.
    let bot = mesh.workload("vote-bot")?.outbound;
    let traffic = tokio::spawn(app::generate(
        bot,
        args.rps,
        args.duration,
        Arc::clone(&stats),
    ));
    let targets: Vec<Target> = (mesh.ws.iter())
        .map(|w| Target {
            labels: stat::workload_labels("emojivoto", w.name),
            addr: w.admin,
        })
        .collect();
    if let Some(addr) = args.dashboard {
        let addr = start_dashboard(&mesh, addr, targets.clone()).await?;
        println!("dashboard: http://{addr}/\n");
    }
    watch(&mesh, &targets, args.duration).await?;
    traffic.abort();
    summary(&stats);
    println!("logs and certificates: {}", mesh.kept());
    mesh.stop().await;
    Ok(())
}

/// The apps, in this process, one per workload.
async fn start_apps(mesh: &Mesh, fault_rate: f64, stats: &Arc<AppStats>) -> anyhow::Result<()> {
    let web_out = mesh.workload("web")?.outbound;
    for w in &mesh.ws {
        let listener = TcpListener::bind(w.app)
            .await
            .with_context(|| w.app.to_string())?;
        tokio::spawn(app::serve_app(
            listener,
            w.name,
            Some(web_out),
            fault_rate,
            Arc::clone(stats),
        ));
    }
    Ok(())
}

async fn start_dashboard(
    mesh: &Mesh,
    addr: SocketAddr,
    targets: Vec<Target>,
) -> anyhow::Result<SocketAddr> {
    let tap = crate::dashboard::DemoTap {
        namespace: "emojivoto",
        issuer: mesh.issuer,
        dir: mesh.dir.clone(),
        proxies: mesh.ws.iter().map(|w| (w.name, w.sa, w.tap)).collect(),
    };
    crate::dashboard::start_for_demo(addr, targets, mesh.config.clone(), tap).await
}

/// The live table every second until `duration` has passed (or Ctrl-C); half-way the canary
/// shifts to 50/50.
async fn watch(mesh: &Mesh, targets: &[Target], duration: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let client = stat::source::http_client();
    let mut last = (Instant::now(), scrape_all(&client, targets).await);
    let mut shifted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => { println!("interrupted"); break; }
        }
        let elapsed = start.elapsed();
        if !shifted && elapsed >= duration / 2 {
            write(&mesh.config.join("voting-route.yaml"), &route_yaml(50, 50))?;
            println!(
                ">>> shifting the canary: voting-v1 50% / voting-v2 50% (route file rewritten; proxies reload it)"
            );
            shifted = true;
        }
        // The table of `mesh stat --scrape`, over the last second.
        let now = scrape_all(&client, targets).await;
        let at = Instant::now();
        let before = std::mem::replace(&mut last, (at, now.clone()));
        let source = Source::Scraped(Scraped::from_scrapes(targets, before.1, now, at - before.0));
        print_tick(elapsed, &source).await;
        if elapsed >= duration {
            break;
        }
    }
    Ok(())
}

fn summary(stats: &AppStats) {
    let sent = stats.sent.load(Ordering::Relaxed);
    let ok = stats.ok.load(Ordering::Relaxed);
    println!(
        "\nvote-bot sent {sent} requests, {ok} succeeded ({:.2}%); voting-v2 failed {} of its answers and retries hid them.",
        if sent > 0 {
            ok as f64 * 100.0 / sent as f64
        } else {
            0.0
        },
        stats.faults.load(Ordering::Relaxed)
    );
}

/// This second's golden metrics per workload, and the calls vote-bot made as it saw them.
async fn print_tick(elapsed: Duration, source: &Source) {
    let q = StatQuery {
        resource: Resource {
            kind: Kind::Deployment,
            name: None,
        },
        scope: Scope::Namespace("emojivoto".into()),
        from: None,
        to: None,
    };
    match query::stat(source, &q, false).await {
        Ok(rows) => print!(
            "t={:.1}s\n{}",
            elapsed.as_secs_f64(),
            print::workloads(&rows, Output::Table)
        ),
        Err(e) => eprintln!("t={:.1}s: {e}", elapsed.as_secs_f64()),
    }
    let from = StatQuery {
        from: Some(Resource {
            kind: Kind::Deployment,
            name: Some("vote-bot".into()),
        }),
        ..q
    };
    for r in query::stat(source, &from, false).await.unwrap_or_default() {
        if let Some(sr) = r.success_rate {
            println!(
                "vote-bot → {}: {:.2}% success, {:.1} rps (as vote-bot sees it, through the mesh)",
                r.name,
                sr * 100.0,
                r.golden.rps
            );
        }
    }
}
