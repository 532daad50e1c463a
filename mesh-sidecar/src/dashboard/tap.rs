//! The dashboard's live tap view: whatever yields tap events (a [`TapFeed`]) is streamed to the
//! browser as Server-Sent Events.
//!
//! Tapping takes an mTLS identity the proxies allow: given one (`--identity-dir`), the
//! dashboard taps through [`ProxiesFeed`], the client `mesh tap` uses. Each browser gets a small bounded queue;
//! events a slow browser cannot take are dropped and counted, never buffered, so a forgotten
//! tab cannot grow the dashboard.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use mesh_tower::tap::TapRequest;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::tap::client::{self, TapClient, TapTarget};

/// Events queued per browser before new ones are dropped.
pub(crate) const QUEUE: usize = 64;

/// How often an idle stream sends a comment, so a closed tab is noticed and its tap ends.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A source of tap events: JSON objects with the fields `direction`, `method`, `authority`,
/// `path`, `status`, `latency_ms`, `duration_ms`, `classification`, `client_id`, `server_id`,
/// `route`, `backend`, `namespace`, `workload`. The stream ends when the tap does.
pub(crate) trait TapFeed: Send + Sync + 'static {
    fn open(&self, filter: &TapFilter) -> BoxStream<'static, serde_json::Value>;
}

/// What the browser asked to see (`/api/tap?namespace=…&workload=…&path=…&method=…&authority=…`);
/// the feed applies it at the proxies, as `mesh tap` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TapFilter {
    pub(crate) namespace: Option<String>,
    pub(crate) workload: Option<String>,
    /// A path prefix.
    pub(crate) path: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) authority: Option<String>,
}

/// Events per second asked of each proxy for one browser: a page shows a few rows a second,
/// and a busy proxy should not serialize thousands for it.
const MAX_RPS: u32 = 50;

/// Taps the proxies' mTLS listeners with the dashboard's identity, as `mesh tap` does.
pub(crate) struct ProxiesFeed {
    client: TapClient,
    targets: Vec<TapTarget>,
}

/// Whether tap can be shown, and if not, why: what the page says in the tap panel.
#[derive(Clone)]
pub(crate) enum Tap {
    Feed(std::sync::Arc<dyn TapFeed>),
    Unavailable(String),
}

// === impl TapFilter ===

impl TapFilter {
    /// From a query string; unknown keys and empty values are ignored.
    pub(crate) fn from_query(query: &str) -> Self {
        let mut f = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = (!v.is_empty()).then(|| v.into_owned());
            match &*k {
                "namespace" => f.namespace = v,
                "workload" => f.workload = v,
                "path" => f.path = v,
                "method" => f.method = v,
                "authority" => f.authority = v,
                _ => {}
            }
        }
        f
    }
}

// === impl Tap ===

impl Tap {
    /// Tap through `targets` with the mesh certificate in `dir`.
    pub(crate) fn proxies(
        dir: &std::path::Path,
        targets: Vec<TapTarget>,
    ) -> Result<Self, client::TapClientError> {
        let client = TapClient::from_dir(dir)?;
        Ok(Self::Feed(std::sync::Arc::new(ProxiesFeed::new(
            client, targets,
        ))))
    }

    /// Without an identity the dashboard cannot tap (proxies serve tap over mTLS only).
    pub(crate) fn not_configured() -> Self {
        Self::Unavailable(
            "tap is not configured: the dashboard was given no mesh identity, and proxies serve \
             tap only to an allowed identity over mTLS; use `mesh tap` with one"
                .to_owned(),
        )
    }
}

// === impl ProxiesFeed ===

impl ProxiesFeed {
    pub(crate) fn new(client: TapClient, targets: Vec<TapTarget>) -> Self {
        Self { client, targets }
    }
}

impl TapFeed for ProxiesFeed {
    /// Opens the proxies' streams in a task; a proxy that cannot be tapped ends the stream
    /// with a logged reason (the browser's EventSource retries on its own).
    fn open(&self, filter: &TapFilter) -> BoxStream<'static, serde_json::Value> {
        let request = TapRequest {
            filter: mesh_tower::tap::TapFilter {
                namespace: filter.namespace.clone(),
                workload: filter.workload.clone(),
                path_prefix: filter.path.clone(),
                method: filter.method.clone(),
                authority: filter.authority.clone(),
            },
            max_rps: Some(MAX_RPS),
            max_events: None,
        };
        let (client, targets) = (self.client.clone(), self.targets.clone());
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut stream = match client::open(&client, &targets, &request).await {
                Ok(stream) => stream,
                Err(e) => return tracing::warn!(error = %e, "dashboard: cannot tap"),
            };
            while let Some(next) = stream.recv().await {
                let event = match next.map(|t| serde_json::to_value(t.event)) {
                    Ok(Ok(event)) => event,
                    Ok(Err(e)) => return tracing::warn!(error = %e, "dashboard: tap event"),
                    Err(e) => return tracing::warn!(error = %e, "dashboard: tap"),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        })
        .boxed()
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Feed(_) => f.write_str("Tap::Feed"),
            Self::Unavailable(why) => f.debug_tuple("Tap::Unavailable").field(why).finish(),
        }
    }
}

/// Moves `events` into `tx` as SSE frames until the stream ends or the browser goes away.
/// A full queue drops the event; the next one that fits is preceded by a `dropped` event
/// with the count, so the page can say that it missed some.
pub(crate) async fn forward(
    mut events: BoxStream<'static, serde_json::Value>,
    tx: mpsc::Sender<Bytes>,
) -> u64 {
    let mut dropped = 0u64;
    let mut unreported = 0u64;
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let frame = tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => Bytes::from(format!("data: {ev}\n\n")),
                None => break,
            },
            _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            () = tx.closed() => break,
        };
        if unreported > 0
            && tx
                .try_send(Bytes::from(format!(
                    "event: dropped\ndata: {unreported}\n\n"
                )))
                .is_ok()
        {
            unreported = 0;
        }
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                unreported += 1;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_the_query_string() {
        let f = TapFilter::from_query("namespace=emojivoto&path=%2Fapi&method=&x=1");
        assert_eq!(f.namespace.as_deref(), Some("emojivoto"));
        assert_eq!(f.path.as_deref(), Some("/api"));
        assert_eq!(f.method, None, "an empty value filters nothing");
    }

    #[tokio::test]
    async fn a_slow_browser_loses_events_instead_of_queueing_them() {
        let events = futures_util::stream::iter(
            (0..100).map(|i| serde_json::json!({ "path": format!("/{i}") })),
        )
        .boxed();
        let (tx, mut rx) = mpsc::channel(4);
        let dropped = forward(events, tx).await;
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.push(String::from_utf8_lossy(&b).into_owned());
        }
        assert_eq!(got.len(), 4, "no more than the queue holds");
        assert_eq!(dropped, 96);
        assert_eq!(got[0], "data: {\"path\":\"/0\"}\n\n");
    }
}
