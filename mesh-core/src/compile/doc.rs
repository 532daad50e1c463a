//! One object as read from the stream: its identity, its metadata, and typed reading of its
//! fields with errors that name the field.

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::identify::Kind;
use crate::authz::ResourceId;
use crate::error::{LoadError, Note};
use crate::index::ObjectRef;
use crate::kinds;
use crate::manifest::RawObject;

#[derive(Clone, Debug)]
pub(crate) struct Doc {
    pub(crate) kind: Kind,
    /// The API group the object was read as ("" for core).
    pub(crate) group: String,
    pub(crate) kind_name: String,
    pub(crate) version: String,
    pub(crate) meta: kinds::ObjectMeta,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) raw: RawObject,
}

/// Errors and notes collected while reading.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    pub(crate) errors: Vec<LoadError>,
    pub(crate) notes: Vec<Note>,
}

// === impl Doc ===

impl Doc {
    /// Which object this is, for the index.
    pub(crate) fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            group: self.group.clone(),
            kind: self.kind_name.clone(),
            // Namespaces are cluster-scoped; everything else read defaults to `default`.
            namespace: if self.kind == Kind::Namespace {
                String::new()
            } else {
                self.namespace.clone()
            },
            name: self.name.clone(),
        }
    }

    pub(crate) fn res(&self) -> String {
        format!("{}/{}/{}", self.kind_name, self.namespace, self.name)
    }

    pub(crate) fn id(&self) -> ResourceId {
        ResourceId::new(&self.kind_name, &self.namespace, &self.name)
    }
}

// === impl Cx ===

impl Cx {
    pub(crate) fn err(&mut self, doc: &Doc, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        self.errors.push(LoadError {
            origin: doc.raw.origin.clone(),
            line: None,
            resource: Some(doc.res()),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        });
    }

    pub(crate) fn note(&mut self, doc: &Doc, message: impl Into<String>) {
        self.notes.push(Note {
            origin: Some(doc.raw.origin.clone()),
            resource: Some(doc.res()),
            message: message.into(),
        });
    }

    /// Deserializes `field` of the document (`spec`, or `""` for the whole object), naming the
    /// field path, and the line where the YAML parser can tell.
    pub(crate) fn typed<T: DeserializeOwned>(&mut self, doc: &Doc, field: &str) -> Option<T> {
        // Deserialize from a borrowed subtree: no copy of the document.
        let mut value = &doc.raw.value;
        if !field.is_empty() {
            for part in field.split('.') {
                value = value.get(part).unwrap_or(&Value::Null);
            }
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = join_path(field, &e.path().to_string());
                let line = (field == "spec")
                    .then(|| {
                        doc.raw
                            .text
                            .as_deref()
                            .and_then(|t| spec_error_line::<T>(t))
                    })
                    .flatten()
                    .map(|l| doc.raw.origin.line + l - 1);
                let msg = e.into_inner().to_string();
                let msg = match msg.find(" at line ") {
                    Some(i) => msg[..i].to_owned(),
                    None => msg,
                };
                let msg = if msg.starts_with("invalid type: unit value") {
                    "missing".to_owned()
                } else {
                    msg
                };
                self.errors.push(LoadError {
                    origin: doc.raw.origin.clone(),
                    line,
                    resource: Some(doc.res()),
                    field: Some(path),
                    message: msg,
                });
                None
            }
        }
    }
}

/// Re-parses a document from its text to learn the line of a `spec` error.
fn spec_error_line<T: DeserializeOwned>(text: &str) -> Option<usize> {
    #[derive(serde::Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct SpecOf<T> {
        #[allow(dead_code)]
        spec: T,
    }
    match serde_norway::from_str::<SpecOf<T>>(text) {
        Ok(_) => None,
        Err(e) => e.location().map(|l| l.line()),
    }
}

pub(crate) fn join_path(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        (p, ".") | (p, "") => p.to_owned(),
        ("", path) => path.to_owned(),
        (p, path) => format!("{p}.{path}"),
    }
}
