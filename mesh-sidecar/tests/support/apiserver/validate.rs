//! What the API server does to a custom object before storing it, from the CRD's structural
//! `openAPIV3Schema`, in its order (Kubernetes docs, "CustomResourceDefinition validation",
//! "Field pruning", "Field validation"):
//!
//! 1. **pruning**: fields the schema does not list are dropped, unless a node says
//!    `x-kubernetes-preserve-unknown-fields` (`metadata` is ObjectMeta, known to the server);
//!    nulls are dropped too unless the field is `nullable`. What was unknown is reported, and
//!    `fieldValidation` decides what that does: `Strict` refuses the request (400), `Warn`
//!    (the default since 1.27) stores the pruned object with a `Warning` header per field,
//!    `Ignore` says nothing;
//! 2. **validation**: types (`x-kubernetes-int-or-string` takes either), `required`, `enum`,
//!    `pattern`, `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`,
//!    `oneOf` over required lists, `format: date-time`; an invalid object is refused with 422
//!    and one cause per field.
//!
//! Self-contained (serde_json and regex only): `tests/crd_schema.rs` judges fixtures with it.

#![allow(dead_code)] // Each test binary uses part of it.

use regex::Regex;
use serde_json::{Map, Value};

/// The `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Unknown fields refuse the request.
    Strict,
    /// Unknown fields are pruned and named in `Warning` headers.
    Warn,
    /// Unknown fields are pruned silently.
    Ignore,
}

/// One invalid value, as a `Status`'s `details.causes[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `spec.rules[0].backendRefs[0].port`; `<root>` for the object itself.
    pub(crate) field: String,
    pub(crate) message: String,
}

// === impl FieldValidation ===

impl FieldValidation {
    /// From the query parameter; `None` when absent. An unknown value is refused as the
    /// server does.
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("" | "Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(format!(
                "fieldValidation: unsupported value {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            )),
        }
    }
}

// === impl Cause ===

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Drops what `schema` does not list (and non-nullable nulls) from `v`, and names each
/// unknown field dropped.
pub(crate) fn prune(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-int-or-string"] == true {
        return;
    }
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(&schema["items"], item, &format!("{path}[{i}]"), unknown);
            }
        }
        Value::Object(fields) => prune_object(schema, fields, path, unknown),
        _ => {}
    }
}

fn prune_object(
    schema: &Value,
    fields: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let keep_unknown = schema["x-kubernetes-preserve-unknown-fields"] == true
        || schema.get("additionalProperties") == Some(&Value::Bool(true))
        // `metadata: {type: object}`: the server knows ObjectMeta itself.
        || (properties.is_none() && additional.is_none());
    let mut drop = Vec::new();
    for (k, child) in fields.iter_mut() {
        let field_schema = properties.and_then(|p| p.get(k)).or(additional);
        match field_schema {
            Some(s) if child.is_null() && s["nullable"] != true => drop.push(k.clone()),
            Some(s) => prune(s, child, &at(path, k), unknown),
            None if keep_unknown => {}
            None => {
                unknown.push(at(path, k));
                drop.push(k.clone());
            }
        }
    }
    for k in drop {
        fields.remove(&k);
    }
}

/// Validates a pruned `v` at `path` as the API server validates a custom object.
pub(crate) fn validate(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut err = |message: String| {
        causes.push(Cause {
            field: if path.is_empty() { "<root>" } else { path }.to_owned(),
            message,
        })
    };
    if v.is_null() {
        if schema["nullable"] != true {
            err("must not be null".to_owned());
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(v.is_i64() || v.is_u64() || v.is_string()) {
            err(format!("{v} is neither an integer nor a string"));
        }
        return;
    }
    let ty = schema["type"].as_str();
    let type_ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        err(format!("{v} is not of type {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        err(format!("{v} is not one of {allowed:?}"));
    }
    if let Some(n) = v.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            err(format!("{v} is less than {}", schema["minimum"]));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            err(format!("{v} is greater than {}", schema["maximum"]));
        }
    }
    if let Some(s) = v.as_str() {
        string(schema, s, &mut err);
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if schema["maxItems"].as_u64().is_some_and(|m| len > m) {
            err(format!("more than {} items", schema["maxItems"]));
        }
        if schema["minItems"].as_u64().is_some_and(|m| len < m) {
            err(format!("fewer than {} items", schema["minItems"]));
        }
        for (i, item) in items.iter().enumerate() {
            validate(&schema["items"], item, &format!("{path}[{i}]"), causes);
        }
        return;
    }
    if let Some(fields) = v.as_object() {
        validate_object(schema, fields, path, causes);
    }
}

/// A string's length, pattern and format.
fn string(schema: &Value, s: &str, err: &mut impl FnMut(String)) {
    let len = s.chars().count() as u64;
    if schema["minLength"].as_u64().is_some_and(|m| len < m) {
        err(format!("{s:?} is shorter than {}", schema["minLength"]));
    }
    if schema["maxLength"].as_u64().is_some_and(|m| len > m) {
        err(format!("{s:?} is longer than {}", schema["maxLength"]));
    }
    if let Some(p) = schema["pattern"].as_str() {
        match Regex::new(p) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => err(format!("{s:?} does not match {p}")),
            Err(e) => err(format!("the schema's pattern {p} does not compile: {e}")),
        }
    }
    if schema["format"] == "date-time" {
        const RFC3339: &str =
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$";
        if !Regex::new(RFC3339).is_ok_and(|re| re.is_match(s)) {
            err(format!("{s:?} is not a date-time (RFC 3339)"));
        }
    }
}

fn validate_object(
    schema: &Value,
    fields: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let present = |k: &str| fields.contains_key(k);
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap_or("");
        if !present(r) {
            causes.push(Cause {
                field: at(path, r),
                message: "Required value".to_owned(),
            });
        }
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let matching = (branches.iter())
            .filter(|b| {
                let required = b["required"].as_array().into_iter().flatten();
                required.clone().all(|r| present(r.as_str().unwrap_or("")))
            })
            .count();
        if matching != 1 {
            causes.push(Cause {
                field: at(path, ""),
                message: format!("must match exactly one of {branches:?}"),
            });
        }
    }
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in fields {
        if let Some(s) = properties.and_then(|p| p.get(k)).or(additional) {
            validate(s, v, &at(path, k), causes);
        }
    }
}

/// `path.field`, or `field` at the root.
fn at(path: &str, field: &str) -> String {
    match (path.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => path.to_owned(),
        (false, false) => format!("{path}.{field}"),
    }
}
