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
use mesh_core::canary::Phase;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::canary::board::Board;
use crate::stat;
use crate::stat::print::{self, Output};
use crate::stat::query::{self, Kind, Resource, Scope, StatQuery};
use crate::stat::source::{Scraped, Source, Target, scrape_all};

mod app;
mod canary;
mod setup;

use app::{AppStats, Fault};
use setup::{Mesh, route_yaml, write};

/// Run a local mesh on loopback and watch it work.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run: 20s by default, the canary shifting half-way. With --canary, by
    /// default until both acts are over.
    #[arg(long, value_parser = mesh_core::values::parse_duration)]
    duration: Option<Duration>,
    /// Requests per second from the traffic generator.
    #[arg(long, default_value_t = 50)]
    rps: u32,
    /// Share of voting-v2's requests that fail with 500 (with --canary: from when it starts
    /// failing in the second act).
    #[arg(long, default_value_t = 0.25)]
    fault_rate: f64,
    /// Keep the generated files (certificates, config, logs) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also serve the dashboard over the demo's proxies (default 127.0.0.1:50750); the URL is
    /// printed, no browser is opened.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:50750")]
    dashboard: Option<SocketAddr>,
    /// Let the mesh roll voting-v2 out on its own: a Canary (in the config directory) promotes
    /// it while it is healthy, then rolls back a new voting-v2 that starts failing.
    #[arg(long)]
    canary: bool,
    /// With --canary: the analysis interval (one step each).
    #[arg(long, default_value = "2s", value_parser = mesh_core::values::parse_duration)]
    canary_interval: Duration,
    /// With --canary: in the second act, voting-v2 starts failing once the canary has this
    /// much of the traffic, in percent (the steps are 20, 40, 60, 80).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=80))]
    canary_fail_at: u32,
}

/// What the demo does to the voting route while it runs.
enum Show {
    /// Half-way, the weights go from 90/10 to 50/50 (`true` once they have).
    Shift(bool),
    /// A Canary moves them; the table shows its board; `until_done`: the demo ends once both
    /// acts are over.
    Canary {
        board: Arc<Board>,
        acts: JoinHandle<[Option<Phase>; 2]>,
        until_done: bool,
    },
}

pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    crate::out::block_on(runtime, demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (route, fault) = if args.canary {
        (route_yaml(100, 0, false), 0.0)
    } else {
        (route_yaml(90, 10, true), args.fault_rate)
    };
    let mut mesh = Mesh::start(args.keep.clone(), &route)?;
    if args.canary {
        let yaml = canary::canary_yaml(args.canary_interval);
        write(&mesh.config.join(canary::FILE), &yaml)?;
    }
    let stats = Arc::new(AppStats::default());
    let fault = Arc::new(Fault::new(fault));
    start_apps(&mut mesh, &fault, &stats).await?;
    mesh.start_proxies().await?;
    let duration = args.duration.unwrap_or(if args.canary {
        // Both acts take about twelve intervals; this only bounds a loaded machine's run,
        // the demo ends once they are over.
        args.canary_interval * 30 + Duration::from_secs(20)
    } else {
        Duration::from_secs(20)
    });
    intro(&args, duration);
    // Traffic: vote-bot's app sends through vote-bot's outbound proxy to web.
    let bot = mesh.workload("vote-bot")?.outbound;
    let traffic = tokio::spawn(app::generate(bot, args.rps, duration, Arc::clone(&stats)));
    let targets: Vec<Target> = (mesh.ws.iter())
        .map(|w| Target {
            labels: stat::workload_labels("emojivoto", w.name),
            addr: w.admin,
        })
        .collect();
    let board = args.canary.then(|| Arc::new(Board::default()));
    if let Some(addr) = args.dashboard {
        let addr = start_dashboard(&mesh, addr, targets.clone(), board.clone()).await?;
        println!("dashboard: http://{addr}/\n");
    }
    let show = match board {
        None => Show::Shift(false),
        Some(board) => Show::Canary {
            acts: tokio::spawn(
                canary::Rollout {
                    config: mesh.config.clone(),
                    targets: targets.clone(),
                    board: Arc::clone(&board),
                    fault: Arc::clone(&fault),
                    fault_rate: args.fault_rate,
                    fail_at: args.canary_fail_at,
                }
                .run(),
            ),
            board,
            until_done: args.duration.is_none(),
        },
    };
    let acts = watch(&mesh, &targets, duration, show).await?;
    traffic.abort();
    summary(&stats, acts);
    println!("logs and certificates: {}", mesh.kept());
    mesh.stop().await;
    Ok(())
}

fn intro(args: &DemoArgs, duration: Duration) {
    let until = if args.canary && args.duration.is_none() {
        format!("until both canary acts are over (at most {duration:?})")
    } else {
        format!("for {duration:?}")
    };
    println!(
        "mesh demo: 5 workloads, each behind its own mesh proxy with an issued identity; traffic {until}"
    );
    if args.canary {
        println!(
            "  vote-bot → web → emoji, and web → voting-svc, moved from voting-v1 to voting-v2 by the Canary in config/{} (one step every {:?}; no retries on this route, so voting-v2's failures reach its callers and the analysis)\n",
            canary::FILE,
            args.canary_interval
        );
    } else {
        println!(
            "  vote-bot → web → emoji, and web → voting-svc = 90% voting-v1 + 10% voting-v2 ({}% of v2's answers are 500s; retries mask them)\n",
            (args.fault_rate * 100.0).round()
        );
    }
}

/// The apps, in this process, one per workload.
async fn start_apps(
    mesh: &mut Mesh,
    fault: &Arc<Fault>,
    stats: &Arc<AppStats>,
) -> anyhow::Result<()> {
    let web_out = mesh.workload("web")?.outbound;
    for w in &mut mesh.ws {
        let bound = w.app_listener.take().context("the app is started once")?;
        let listener = TcpListener::from_std(bound).with_context(|| w.app.to_string())?;
        tokio::spawn(app::serve_app(
            listener,
            w.name,
            Some(web_out),
            Arc::clone(fault),
            Arc::clone(stats),
        ));
    }
    Ok(())
}

async fn start_dashboard(
    mesh: &Mesh,
    addr: SocketAddr,
    targets: Vec<Target>,
    board: Option<Arc<Board>>,
) -> anyhow::Result<SocketAddr> {
    let tap = crate::dashboard::DemoTap {
        namespace: "emojivoto",
        issuer: mesh.issuer,
        dir: mesh.dir.clone(),
        proxies: mesh.ws.iter().map(|w| (w.name, w.sa, w.tap)).collect(),
    };
    crate::dashboard::start_for_demo(addr, targets, mesh.config.clone(), tap, board).await
}

/// The live table every second until `duration` has passed (or Ctrl-C, or both canary acts
/// are over); returns how the acts ended.
async fn watch(
    mesh: &Mesh,
    targets: &[Target],
    duration: Duration,
    mut show: Show,
) -> anyhow::Result<Option<[Option<Phase>; 2]>> {
    let start = Instant::now();
    let client = stat::source::http_client();
    let mut last = (Instant::now(), scrape_all(&client, targets).await);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Ticks still to show once the acts are over, so the last move is seen in the table.
    let mut after_acts = 2;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => { println!("interrupted"); break; }
        }
        let elapsed = start.elapsed();
        // The table of `mesh stat --scrape`, over the last second.
        let now = scrape_all(&client, targets).await;
        let at = Instant::now();
        let before = std::mem::replace(&mut last, (at, now.clone()));
        let source = Source::Scraped(Scraped::from_scrapes(targets, before.1, now, at - before.0));
        print_tick(elapsed, &source).await;
        match &mut show {
            Show::Shift(shifted) if !*shifted && elapsed >= duration / 2 => {
                write(
                    &mesh.config.join("voting-route.yaml"),
                    &route_yaml(50, 50, true),
                )?;
                println!(
                    ">>> shifting the canary: voting-v1 50% / voting-v2 50% (route file rewritten; proxies reload it)"
                );
                *shifted = true;
            }
            Show::Shift(_) => {}
            Show::Canary {
                board,
                acts,
                until_done,
            } => {
                board.views().iter().for_each(|v| println!("{v}"));
                if *until_done && acts.is_finished() {
                    after_acts -= 1;
                }
            }
        }
        if elapsed >= duration || after_acts == 0 {
            break;
        }
    }
    Ok(match show {
        Show::Shift(_) => None,
        Show::Canary { acts, .. } if acts.is_finished() => acts.await.ok(),
        Show::Canary { acts, .. } => {
            acts.abort();
            None
        }
    })
}

fn summary(stats: &AppStats, acts: Option<[Option<Phase>; 2]>) {
    let sent = stats.sent.load(Ordering::Relaxed);
    let ok = stats.ok.load(Ordering::Relaxed);
    let faults = stats.faults.load(Ordering::Relaxed);
    println!(
        "\nvote-bot sent {sent} requests, {ok} succeeded ({:.2}%); voting-v2 failed {faults} of its answers{}.",
        if sent > 0 {
            ok as f64 * 100.0 / sent as f64
        } else {
            0.0
        },
        if acts.is_some() {
            ""
        } else {
            " and retries hid them"
        }
    );
    if let Some(acts) = acts {
        let said = |p: Option<Phase>| match p {
            Some(Phase::Succeeded) => "Succeeded (voting-v2 promoted)",
            Some(Phase::Failed) => "Failed (rolled back to voting-v1)",
            Some(Phase::Halted) => "Halted",
            Some(Phase::Progressing) | None => "not finished",
        };
        println!("canary: act 1 {}; act 2 {}", said(acts[0]), said(acts[1]));
    }
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
