//! Which schema and subresources each custom kind is served with, what a write to a custom
//! object keeps, and the server's answers when a write does not fit its schema (the judging
//! itself is in `validate`).

use hyper::{Response, StatusCode};
use mesh_core::kinds::catalog::{self, Definition};
use mesh_core::kinds::schema::open_api_schema;
use serde_json::{Value, json};

use super::rest::{json_response, status, status_value};
use super::validate::{self, Cause, FieldValidation};
use super::{ApiResource, Body, State};

/// One served version of a custom kind, as its CRD declares it.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    /// `openAPIV3Schema`.
    pub(crate) schema: Value,
    /// `subresources.status`.
    pub(crate) status: bool,
}

// === impl State ===

impl State {
    /// Serves `r`; a kind of the mesh's catalog that Kubernetes does not define comes with the
    /// schema and subresources of the CRD `mesh install --crds` prints for it.
    pub(super) fn serve(&mut self, r: ApiResource) {
        let kind =
            catalog::by_group_kind(r.group, r.kind).filter(|k| k.definition != Definition::BuiltIn);
        if let Some(kind) = kind
            && let Some(version) = kind.version(r.version)
            && let Some(schema) = open_api_schema(kind, version)
        {
            let status = kind.status.is_some();
            self.served
                .insert(served_key(&r), Served { schema, status });
        }
        self.resources.push(r);
    }

    /// Records the schema and subresources of each version a CRD serves.
    pub(super) fn declare(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (group, plural) = (&spec["group"], &spec["names"]["plural"]);
        for v in spec["versions"].as_array().into_iter().flatten() {
            let key = (
                group.as_str().unwrap_or("").to_owned(),
                plural.as_str().unwrap_or("").to_owned(),
                v["name"].as_str().unwrap_or("").to_owned(),
            );
            let schema = v["schema"]["openAPIV3Schema"].clone();
            let status = v["subresources"].get("status").is_some();
            if schema.is_object() {
                self.served.insert(key, Served { schema, status });
            }
        }
    }

    /// Forgets what a deleted CRD declared.
    pub(super) fn undeclare(&mut self, group: &str, plural: &str) {
        self.served
            .retain(|(g, p, _), _| !(g == group && p == plural));
    }

    /// Whether `r` serves `/status`: as its CRD says, and for the built-in kinds here that
    /// have it (Deployment, PodDisruptionBudget, CustomResourceDefinition).
    pub(super) fn has_status(&self, r: &ApiResource) -> bool {
        match self.served.get(&served_key(r)) {
            Some(s) => s.status,
            None => matches!(r.group, "apps" | "policy" | "apiextensions.k8s.io"),
        }
    }

    /// Prunes what `r`'s schema does not list from `v`: refused under `Strict`, warnings under
    /// `Warn`.
    pub(super) fn prune(
        &self,
        r: &ApiResource,
        v: &mut Value,
        fv: FieldValidation,
    ) -> Result<Vec<String>, Box<Response<Body>>> {
        let Some(served) = self.served.get(&served_key(r)) else {
            return Ok(Vec::new());
        };
        let mut unknown = Vec::new();
        validate::prune(&served.schema, v, "", &mut unknown);
        let said: Vec<String> = (unknown.iter())
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match fv {
            _ if said.is_empty() => Ok(Vec::new()),
            FieldValidation::Strict => Err(Box::new(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("strict decoding error: {}", said.join(", ")),
            ))),
            FieldValidation::Warn => Ok(said),
            FieldValidation::Ignore => Ok(Vec::new()),
        }
    }

    /// Refuses an object named `name` that does not fit `r`'s schema: 422 `Invalid`.
    pub(super) fn validate(
        &self,
        r: &ApiResource,
        name: &str,
        v: &Value,
    ) -> Result<(), Box<Response<Body>>> {
        let Some(served) = self.served.get(&served_key(r)) else {
            return Ok(());
        };
        let mut causes = Vec::new();
        validate::validate(&served.schema, v, "", &mut causes);
        if causes.is_empty() {
            return Ok(());
        }
        Err(Box::new(invalid(r, name, &causes)))
    }
}

fn served_key(r: &ApiResource) -> (String, String, String) {
    (
        r.group.to_owned(),
        r.plural.to_owned(),
        r.version.to_owned(),
    )
}

/// The real server's answer to an invalid object: a `Status` with one cause per field.
fn invalid(r: &ApiResource, name: &str, causes: &[Cause]) -> Response<Body> {
    let listed: Vec<String> = causes.iter().map(ToString::to_string).collect();
    let said = match listed.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let code = StatusCode::UNPROCESSABLE_ENTITY;
    let mut body = status_value(
        code,
        "Invalid",
        &format!("{}.{} \"{name}\" is invalid: {said}", r.kind, r.group),
    );
    let causes: Vec<Value> = (causes.iter())
        .map(|c| {
            let reason = if c.message == "Required value" {
                "FieldValueRequired"
            } else {
                "FieldValueInvalid"
            };
            json!({"reason": reason, "message": c.message, "field": c.field})
        })
        .collect();
    body["details"] = json!({"name": name, "group": r.group, "kind": r.kind, "causes": causes});
    json_response(code, &body)
}

/// A write to a custom resource's main resource: with a status subresource the stored status
/// stays; the generation counts changes of anything but status and metadata.
pub(super) fn custom_main_write(
    mut v: Value,
    existing: Option<&Value>,
    status_subresource: bool,
) -> Value {
    let spec = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            for k in ["status", "metadata", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        o
    };
    let generation = match existing {
        None => 1,
        Some(old) => {
            let before = old["metadata"]["generation"].as_i64().unwrap_or(1);
            before + i64::from(spec(old) != spec(&v))
        }
    };
    if let Some(m) = v.as_object_mut()
        && status_subresource
    {
        m.remove("status");
        if let Some(st) = existing.and_then(|o| o.get("status")) {
            m.insert("status".to_owned(), st.clone());
        }
    }
    v["metadata"]["generation"] = json!(generation);
    v
}

/// What a refusal says, for a test's panic message.
pub(super) fn refusal(rsp: Response<Body>) -> String {
    let code = rsp.status();
    let body =
        futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(rsp.into_body()))
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
    format!("{code}: {}", body.unwrap_or_default())
}
