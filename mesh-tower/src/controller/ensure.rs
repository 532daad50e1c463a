//! [`EnsureLayer`]: before a request is routed, the Service it names (or the original
//! destination it was sent to) is watched on the controller, and the request waits a bounded
//! time for the first answer. Routing then decides from what the client knows, as it would
//! with a file.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use mesh_core::NameContext;
use tower_layer::Layer;
use tower_service::Service;

use super::ControllerClient;
use crate::route::{OrigDst, destination};

/// Watches what each request is for before it is routed; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct EnsureLayer {
    client: ControllerClient,
    names: Arc<NameContext>,
}

/// The service of [`EnsureLayer`].
#[derive(Clone, Debug)]
pub struct Ensure<S> {
    inner: S,
    client: ControllerClient,
    names: Arc<NameContext>,
}

/// Response future of [`Ensure`].
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// What a request is for.
enum Target {
    Service(String, String),
    Addr(std::net::SocketAddr),
    Nothing,
}

// === impl EnsureLayer ===

impl EnsureLayer {
    /// Watches through `client`; names resolve from `names` (as [`crate::route::RouteLayer`]
    /// resolves them).
    pub fn new(client: ControllerClient, names: NameContext) -> Self {
        Self {
            client,
            names: Arc::new(names),
        }
    }
}

impl<S> Layer<S> for EnsureLayer {
    type Service = Ensure<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Ensure {
            inner,
            client: self.client.clone(),
            names: Arc::clone(&self.names),
        }
    }
}

// === impl Ensure ===

impl<S> Ensure<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn target<B>(&self, req: &Request<B>) -> Target {
        // Transparent mode: the original destination decides, as in routing.
        if let Some(OrigDst(addr)) = req.extensions().get::<OrigDst>() {
            return Target::Addr(*addr);
        }
        let Some((host, _)) = destination(req) else {
            return Target::Nothing;
        };
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Target::Nothing;
        }
        match self.names.service_name(host) {
            Some(n) => Target::Service(n.namespace.to_owned(), n.name.to_owned()),
            None => Target::Nothing,
        }
    }
}

impl<S, B> Service<Request<B>> for Ensure<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let target = self.target(&req);
        // The ready service goes with this request; the clone left behind is polled ready
        // before the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        Box::pin(async move {
            match target {
                Target::Service(ns, name) => {
                    client.ensure(&ns, &name).await;
                }
                Target::Addr(addr) => {
                    client.ensure_addr(addr).await;
                }
                Target::Nothing => {}
            }
            inner.call(req).await
        })
    }
}
