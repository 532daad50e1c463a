//! From Kubernetes objects to policy, by family: [`identify`] recognises a kind; `gateway`,
//! `smi`, `profile`, `linkerd`, `inbound` and `workloads` each read and check one object of
//! their kinds alone into a typed value ([`object::Object`]); [`link`] and
//! [`inbound::link_inbound`] link one Service or one namespace from those values; [`notes`]
//! says what needs the whole picture. A stream compiles all-or-nothing on top of a
//! [`PolicyIndex`].

use std::collections::HashMap;

use crate::error::{LoadError, LoadErrors, Note};
use crate::index::{ObjectStatus, PolicyIndex};
use crate::manifest;
use crate::policy::{MeshPolicy, PolicyConfig};

mod delivery;
mod doc;
mod fields;
mod filters;
mod gateway;
pub(crate) mod identify;
mod inbound;
mod link;
mod linkerd;
mod notes;
mod object;
mod overlap;
mod profile;
mod smi;
mod workloads;

pub(crate) use doc::{Cx, Doc};
pub(crate) use inbound::{Inbound, link_inbound};
pub(crate) use link::{link_endpoints, link_service};
pub(crate) use notes::notes;
pub(crate) use object::{Entry, Key, Members, Object, Reader, parse};

/// Compiles a stream all-or-nothing: every object is applied, in stream order, to a fresh
/// index; any refused object (or unreadable document) fails the whole with every error.
pub(crate) fn compile(input: &str, config: &PolicyConfig) -> Result<MeshPolicy, LoadErrors> {
    let (raws, syntax) = manifest::read_stream(input);
    let mut cx = Cx::default();
    for e in syntax {
        cx.errors.push(LoadError {
            origin: e.origin,
            line: e.line,
            resource: None,
            field: None,
            message: e.message,
        });
    }

    let mut skipped = 0;
    let mut docs: Vec<Doc> = Vec::new();
    let mut seen: HashMap<(identify::Kind, String, String), usize> = HashMap::new();
    for raw in raws {
        let Some(doc) = cx.identify(raw, &mut skipped) else {
            continue;
        };
        let key = (doc.kind, doc.namespace.clone(), doc.name.clone());
        if let Some(&i) = seen.get(&key) {
            let earlier = docs[i].raw.origin.clone();
            cx.notes.push(Note {
                origin: Some(doc.raw.origin.clone()),
                resource: Some(doc.res()),
                message: format!(
                    "replaces the same resource from {earlier}, as kubectl apply would"
                ),
            });
            // The later version takes the earlier one's place, as an update would.
            docs[i] = doc;
        } else {
            seen.insert(key, docs.len());
            docs.push(doc);
        }
    }

    let mut index = PolicyIndex::new(config.clone());
    for doc in docs {
        let object = doc.object_ref();
        match index.apply_doc(doc, Vec::new()) {
            Ok(_) => {
                if let Some(ObjectStatus::Accepted { notes }) = index.status(&object) {
                    cx.notes.extend(notes.iter().cloned());
                }
            }
            Err((_, errors)) => cx.errors.extend(errors),
        }
    }
    cx.errors
        .sort_by_key(|e| (e.origin.document, e.origin.item));
    if !cx.errors.is_empty() {
        return Err(LoadErrors(cx.errors));
    }
    let mut policy = index.snapshot();
    cx.notes.extend(index.notes());
    policy.notes = cx.notes;
    policy.skipped = skipped;
    Ok(policy)
}
