//! A step's golden metrics from the sources `mesh stat` reads: a Prometheus (PromQL
//! `increase` and `histogram_quantile` over the interval) or the proxies' admin `/metrics`
//! scraped at the start and the end of the interval.
//!
//! Which side is read: the callers' **outbound** `response_total` / `response_latency_ms`,
//! per `dst_service` in the canary's namespace. Flagger on Linkerd reads the inbound series
//! of the canary and primary workloads instead; the outbound side is what the callers
//! actually got, so it also counts requests that never reached the canary (refused
//! connections, 502s and 504s from the caller's proxy), which are exactly the failures a
//! rollout must not hide, and it needs no mapping from Service to workload.
//!
//! A canary that fails *every* request is ejected by the callers' failure accrual (seven
//! failures in a row) and its share goes to stable: it then serves far fewer requests than
//! its weight should bring, which `mesh_core::canary::decide` counts as a failed check
//! (`Breach::Starved`) rather than a quiet step.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use mesh_core::canary::{BackendWindow, Canary, Window};

use super::{BoxError, Goldens};
use crate::inject::pod::{ADMIN_PORT, PROXY_CONTAINER};
use crate::stat::query::{Golden, goldens};
use crate::stat::series::Selector;
use crate::stat::source::{Prometheus, Scraped, Source, Target};

/// Where the numbers come from.
#[derive(Clone)]
pub(crate) enum StatGoldens {
    /// A Prometheus that scrapes the proxies (base URL).
    Prometheus(String),
    /// These proxies' admin addresses, scraped directly.
    Scrape(Vec<Target>),
    /// Every running meshed pod's proxy (admin port 4191), listed from the API server at
    /// the start of each window: the callers may be in any namespace.
    Pods(kube::Client),
}

// === impl StatGoldens ===

impl Goldens for StatGoldens {
    async fn window(&self, canary: &Canary, interval: Duration) -> Result<Window, BoxError> {
        let source = match self {
            Self::Prometheus(base) => {
                tokio::time::sleep(interval).await;
                Source::Prometheus(Box::new(Prometheus::new(base, interval)))
            }
            Self::Scrape(targets) => {
                Source::Scraped(Scraped::collect(targets, interval, |_| {}).await?)
            }
            Self::Pods(client) => {
                let pods = Api::<Pod>::all(client.clone());
                let list = pods.list(&ListParams::default()).await?;
                let targets = meshed_proxies(&list.items);
                Source::Scraped(Scraped::collect(&targets, interval, |_| {}).await?)
            }
        };
        let sel = Selector::new("response_total")
            .eq("direction", "outbound")
            .eq("dst_namespace", canary.namespace.clone());
        let by_service = goldens(&source, &sel, "response_latency_ms", &["dst_service"]).await?;
        let backend = |name: &str| {
            (by_service.get(&vec![name.to_owned()]))
                .map(backend_window)
                .unwrap_or_default()
        };
        Ok(Window {
            stable: backend(&canary.stable.name),
            canary: backend(&canary.canary.name),
        })
    }
}

/// The admin addresses of the running pods that carry our proxy, named as `mesh stat`
/// names its targets.
fn meshed_proxies(pods: &[Pod]) -> Vec<Target> {
    let meshed = |p: &&Pod| {
        let spec = p.spec.as_ref();
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        containers.iter().any(|c| c.name == PROXY_CONTAINER)
    };
    let running = |p: &&Pod| {
        let status = p.status.as_ref();
        status.and_then(|s| s.phase.as_deref()) == Some("Running")
    };
    (pods.iter().filter(meshed).filter(running))
        .filter_map(|p| {
            let ip: IpAddr = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            let port = u16::try_from(ADMIN_PORT).ok()?;
            let labels = crate::stat::workload_labels(
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?,
            );
            Some(Target {
                labels,
                addr: SocketAddr::new(ip, port),
            })
        })
        .collect()
}

/// A backend's numbers as `decide` takes them: whole responses, p99 as a duration.
fn backend_window(g: &Golden) -> BackendWindow {
    // Prometheus extrapolates `increase`, so counts may be fractional: round to whole
    // responses.
    let count = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.round() as u64
        } else {
            0
        }
    };
    let p99 = (g.latency_ms_p99)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    BackendWindow::new(count(g.requests), count(g.successes), p99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_meshed_pods_are_scraped_on_their_admin_port() {
        let pod = |name: &str, container: &str, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "app"}, {"name": container}]},
                "status": {"phase": phase, "podIP": "10.1.2.3"},
            }))
            .unwrap()
        };
        let pods = [
            pod("web-1", "mesh-proxy", "Running"),
            pod("web-2", "mesh-proxy", "Pending"),
            pod("legacy", "sidecar", "Running"),
        ];
        let targets = meshed_proxies(&pods);
        assert_eq!(targets.len(), 1, "{targets:?}");
        assert_eq!(targets[0].addr, "10.1.2.3:4191".parse().unwrap());
        assert_eq!(targets[0].labels["pod"], "web-1");
    }

    #[test]
    fn goldens_become_whole_responses_and_a_duration() {
        let g = Golden {
            requests: 99.6,
            successes: 97.2,
            latency_ms_p99: Some(250.0),
            ..Golden::default()
        };
        let w = backend_window(&g);
        assert_eq!((w.requests, w.successes), (100, 97));
        assert_eq!(w.p99, Some(Duration::from_millis(250)));
        assert_eq!(backend_window(&Golden::default()), BackendWindow::default());
    }
}
