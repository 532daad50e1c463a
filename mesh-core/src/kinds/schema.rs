//! OpenAPI v3 schemas of the kinds the mesh defines CRDs for, generated from the same serde
//! types the compiler reads (feature `schema`).
//!
//! Each version's schema is *structural*, as the API server requires of a CRD: every node
//! is typed, nothing is a `$ref`, and `x-kubernetes-preserve-unknown-fields` appears only
//! where the upstream CRD has it (ServiceProfile's nested `all`/`any`/`not` matches, which a
//! schema cannot describe since it cannot recurse) or where a field's shape differs between
//! versions and published examples (SMI HTTPRouteGroup `headers`). The API server prunes
//! whatever a structural schema does not list, which is why the types mirror every
//! upstream field, read or not.
//!
//! ```
//! use mesh_core::kinds::{catalog, schema};
//!
//! let server = catalog::by_group_kind("policy.linkerd.io", "Server").unwrap();
//! let v1beta3 = schema::open_api_schema(server, server.storage()).unwrap();
//! let port = &v1beta3["properties"]["spec"]["properties"]["port"];
//! assert_eq!(port["x-kubernetes-int-or-string"], true);
//! ```

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use super::catalog::{Definition, Family, KindInfo, Layout, Quirk, Version};
use super::{IntOrString, SmiHeaders};

/// An API group: empty (core) or a DNS subdomain. As Gateway API's `Group`.
pub(crate) const GROUP: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A kind name. As Gateway API's `Kind`.
pub(crate) const KIND: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
/// A DNS label, as namespaces are.
pub(crate) const LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS subdomain, as section and rule names are.
pub(crate) const SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A hostname, optionally with a leading wildcard label. As Gateway API's `Hostname`.
pub(crate) const HOSTNAME: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Gateway API duration: `10s`, `1h30m`, `500ms`.
pub(crate) const DURATION: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// The `openAPIV3Schema` of one version of a kind, or `None` for kinds Kubernetes defines.
pub fn open_api_schema(kind: &KindInfo, version: &Version) -> Option<Value> {
    if kind.definition == Definition::BuiltIn {
        return None;
    }
    let mut body = body_schema(kind.family)?;
    structural(&mut body);
    let mut properties = Map::new();
    properties.insert("apiVersion".to_owned(), json!({ "type": "string" }));
    properties.insert("kind".to_owned(), json!({ "type": "string" }));
    properties.insert("metadata".to_owned(), json!({ "type": "object" }));
    let mut required = Vec::new();
    match version.layout {
        Layout::Spec => {
            // ServiceProfile and HTTPRouteGroup may be written with no spec at all.
            if !matches!(kind.family, Family::ServiceProfile | Family::HttpRouteGroup) {
                required.push(json!("spec"));
            }
            properties.insert("spec".to_owned(), body);
        }
        Layout::TopLevel => {
            if let Some(Value::Object(fields)) = body.get_mut("properties").map(Value::take) {
                properties.extend(fields);
            }
            if let Some(Value::Array(r)) = body.get_mut("required").map(Value::take) {
                required.extend(r);
            }
        }
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    for quirk in version.quirks {
        apply(&mut schema, *quirk);
    }
    // After the quirks: a status repeats the references of this version's spec.
    if let Some(status) = kind.status {
        let status = status.schema(&schema["properties"]["spec"]);
        schema["properties"]["status"] = status;
    }
    Some(schema)
}

/// The schema of what a kind keeps under `spec` (or beside metadata, for top-level layouts).
fn body_schema(family: Family) -> Option<Value> {
    use super::*;
    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let schema = match family {
        Family::TrafficSplit => generator.root_schema_for::<TrafficSplitSpec>(),
        Family::HttpRouteGroup => generator.root_schema_for::<HttpRouteGroupSpec>(),
        Family::HttpRoute | Family::LinkerdHttpRoute => {
            generator.root_schema_for::<HttpRouteSpec>()
        }
        Family::GrpcRoute => generator.root_schema_for::<GrpcRouteSpec>(),
        Family::ServiceProfile => generator.root_schema_for::<ServiceProfileSpec>(),
        Family::Server => generator.root_schema_for::<ServerSpec>(),
        Family::ServerAuthorization => generator.root_schema_for::<ServerAuthorizationSpec>(),
        Family::AuthorizationPolicy => generator.root_schema_for::<AuthorizationPolicySpec>(),
        Family::MeshTlsAuthentication => generator.root_schema_for::<MeshTlsAuthenticationSpec>(),
        Family::NetworkAuthentication => generator.root_schema_for::<NetworkAuthenticationSpec>(),
        Family::RateLimitPolicy => generator.root_schema_for::<RateLimitPolicySpec>(),
        Family::Canary => generator.root_schema_for::<CanarySpec>(),
        Family::FaultInjection => generator.root_schema_for::<FaultInjectionSpec>(),
        _ => return None,
    };
    Some(schema.to_value())
}

/// Rewrites what schemars writes for JSON Schema into what a CRD accepts: no titles or
/// meta-schema, `Option<T>` as plain `T` (the API server prunes nulls of fields that are not
/// nullable, as upstream CRDs are), and only the integer/number formats Kubernetes knows.
fn structural(node: &mut Value) {
    let Value::Object(map) = node else { return };
    map.remove("$schema");
    map.remove("title");
    map.remove("nullable");
    if map.get("const") == Some(&Value::Null) {
        map.remove("const");
    }
    // `Option<T>` of a schema without a `type`: anyOf [T, null].
    if let Some(Value::Array(options)) = map.get("anyOf") {
        let not_null: Vec<Value> = options.iter().filter(|o| !is_null(o)).cloned().collect();
        if let [only] = not_null.as_slice()
            && let Value::Object(inner) = only.clone()
        {
            map.remove("anyOf");
            for (k, v) in inner {
                map.entry(k).or_insert(v);
            }
        }
    }
    let keep_format = matches!(
        map.get("format").and_then(Value::as_str),
        Some("int32" | "int64" | "float" | "double")
    );
    if !keep_format {
        map.remove("format");
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = child {
                    props.values_mut().for_each(structural);
                }
            }
            "items" | "additionalProperties" => structural(child),
            _ => {}
        }
    }
}

fn is_null(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null"))
        || (schema.get("const") == Some(&Value::Null) && schema.get("type").is_none())
}

/// Applies one version's difference from the shared type.
fn apply(schema: &mut Value, quirk: Quirk) {
    match quirk {
        Quirk::Without(path) => {
            let Some((parent, field)) = path.rsplit_once('.') else {
                return;
            };
            if let Some(object) = node(schema, parent) {
                remove_property(object, field);
            }
        }
        Quirk::IntegerOnly(path) => {
            if let Some(Value::Object(n)) = node(schema, path) {
                n.remove("x-kubernetes-int-or-string");
                n.insert("type".to_owned(), json!("integer"));
                n.insert("format".to_owned(), json!("int32"));
                n.insert("minimum".to_owned(), json!(0));
            }
        }
    }
}

/// The schema node of a field path such as `spec.rules[].backendRefs`.
fn node<'a>(schema: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut at = schema;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        at = at.get_mut("properties")?.get_mut(name)?;
        if items {
            at = at.get_mut("items")?;
        }
    }
    Some(at)
}

/// Removes a property, with what refers to it: its `required` entry, and the `oneOf`
/// branches that require it (a Server before v1beta2 has only a pod selector, so it must
/// have that one).
fn remove_property(object: &mut Value, field: &str) {
    let Value::Object(map) = object else { return };
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.remove(field);
    }
    let names_field = |v: &Value| v.as_str() == Some(field);
    if let Some(Value::Array(required)) = map.get_mut("required") {
        required.retain(|r| !names_field(r));
    }
    if let Some(Value::Array(branches)) = map.get_mut("oneOf") {
        branches.retain(|b| {
            !b.get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(names_field))
        });
        if let [only] = branches.as_slice() {
            let extra = only.get("required").cloned();
            map.remove("oneOf");
            if let Some(Value::Array(extra)) = extra {
                let required = map
                    .entry("required")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(required) = required {
                    required.extend(extra);
                }
            }
        }
    }
}

/// A list of objects whose shape the schema does not describe (Linkerd's CRD does the same
/// for ServiceProfile's recursive matches).
pub(crate) fn free_form_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// An object whose shape the schema does not describe. Linkerd's CRD types a request
/// match's `not` as a list, but Linkerd reads (and documents) it as one match: ours follows
/// what is read.
pub(crate) fn free_form(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

// === impl IntOrString ===

impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

// === impl SmiHeaders ===

impl JsonSchema for SmiHeaders {
    fn schema_name() -> Cow<'static, str> {
        "SmiHeaders".into()
    }

    /// A map of header to regex in the spec text, a list of one-entry maps in v1alpha2
    /// examples that SMI implementations accepted: untyped, kept as written.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::catalog;

    fn schema(group: &str, kind: &str, version: &str) -> Value {
        let k = catalog::by_group_kind(group, kind).unwrap();
        open_api_schema(k, k.version(version).unwrap()).unwrap()
    }

    #[test]
    fn smi_route_groups_keep_matches_where_each_version_does() {
        let old = schema("specs.smi-spec.io", "HTTPRouteGroup", "v1alpha2");
        assert!(old["properties"].get("spec").is_none(), "{old:#}");
        assert_eq!(old["properties"]["matches"]["type"], "array");
        let new = schema("specs.smi-spec.io", "HTTPRouteGroup", "v1alpha4");
        assert!(new["properties"].get("matches").is_none());
        assert_eq!(
            new["properties"]["spec"]["properties"]["matches"]["type"],
            "array"
        );
    }

    #[test]
    fn versions_differ_as_upstream_does() {
        let old = schema("policy.linkerd.io", "Server", "v1beta1");
        let spec = &old["properties"]["spec"];
        assert!(spec["properties"].get("accessPolicy").is_none());
        assert!(spec.get("oneOf").is_none(), "{spec:#}");
        assert!(
            spec["required"]
                .as_array()
                .unwrap()
                .contains(&json!("podSelector"))
        );
        let new = schema("policy.linkerd.io", "Server", "v1beta3");
        assert_eq!(
            new["properties"]["spec"]["oneOf"].as_array().unwrap().len(),
            2
        );

        let split = |v| schema("split.smi-spec.io", "TrafficSplit", v);
        let weight = |s: &Value| {
            s["properties"]["spec"]["properties"]["backends"]["items"]["properties"]["weight"]
                .clone()
        };
        assert_eq!(
            weight(&split("v1alpha1"))["x-kubernetes-int-or-string"],
            true
        );
        assert_eq!(weight(&split("v1alpha4"))["type"], "integer");
    }

    #[test]
    fn ports_are_ranged() {
        let route = schema("gateway.networking.k8s.io", "HTTPRoute", "v1");
        let port = &route["properties"]["spec"]["properties"]["rules"]["items"]["properties"]["backendRefs"]
            ["items"]["properties"]["port"];
        assert_eq!(port["type"], "integer");
        assert_eq!(port["minimum"], 1);
        assert_eq!(port["maximum"], 65535);
        println!("{route:#}");
    }
}
