//! The API server as `mesh check` reads it: raw JSON by path, so that a missing kind or
//! object is an answer (a check result) rather than a deserialisation error.

use std::path::PathBuf;
use std::time::SystemTime;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

/// Why the client could not be made or a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    #[error("cannot read the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("cannot find a kubeconfig or an in-cluster configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("{0}")]
    Client(#[from] kube::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
}

/// An API server client, for `mesh check`'s reads and reviews.
#[derive(Clone)]
pub(crate) struct Kube {
    client: kube::Client,
}

// === impl Kube ===

impl Kube {
    /// Connects as our other kube commands do (in-cluster config or `KUBECONFIG`), or with
    /// the given kubeconfig file and context, as kubectl's flags of the same names.
    pub(crate) async fn connect(
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    ) -> Result<Self, KubeError> {
        let config = if kubeconfig.is_none() && context.is_none() {
            kube::Config::infer().await?
        } else {
            let file = match kubeconfig {
                Some(path) => Kubeconfig::read_from(path)?,
                None => Kubeconfig::read()?,
            };
            let options = KubeConfigOptions {
                context,
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options).await?
        };
        Ok(Self {
            client: kube::Client::try_from(config)?,
        })
    }

    /// GETs `path`; `None` when the API server answers 404 (no such object or kind).
    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        let req = http::Request::get(path).body(Vec::new())?;
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The items of a list at `path`, none when the kind is not served.
    pub(crate) async fn list(&self, path: &str) -> Result<Vec<Value>, KubeError> {
        let list = self.get(path).await?;
        Ok(list
            .and_then(|l| l.get("items").and_then(Value::as_array).cloned())
            .unwrap_or_default())
    }

    /// POSTs `body` to `path` and returns the answer (reviews are answered so).
    pub(crate) async fn create(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string().into_bytes())?;
        Ok(self.client.request::<Value>(req).await?)
    }

    /// `/version`, and the API server's clock when it answered (its `Date` header).
    pub(crate) async fn version(&self) -> Result<(Value, Option<SystemTime>), KubeError> {
        let req = http::Request::get("/version").body(kube::client::Body::from(Vec::new()))?;
        let rsp = self.client.send(req).await?;
        let date = (rsp.headers().get(http::header::DATE))
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let status = rsp.status();
        let body = rsp.into_body().collect_bytes().await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(KubeError::Client(kube::Error::Api(Box::new(
                kube::core::Status::failure(&text, "").with_code(status.as_u16()),
            ))));
        }
        let v = serde_json::from_slice(&body).map_err(kube::Error::SerdeError)?;
        Ok((v, date))
    }
}
