//! A note where two Servers select the same port of the same workload: only one applies (the
//! oldest, then the first by name, as Linkerd decides), so the other is inert there.

use super::object::{Entry, Object};
use crate::authz::{InboundTarget, Server};
use crate::error::Note;

/// Notes, on each Server that loses a pod port to another, which Server applies there.
pub(crate) fn server_overlap_notes(entries: &[&Entry], out: &mut Vec<Note>) {
    let servers: Vec<(&Entry, &Server)> = (entries.iter())
        .filter_map(|e| match &e.object {
            Object::Server(s) => Some((*e, &s.server)),
            _ => None,
        })
        .collect();
    if servers.len() < 2 {
        return;
    }
    for e in entries {
        let Object::Workload(w) = &e.object else {
            continue;
        };
        for (number, name) in &w.ports {
            let target = InboundTarget {
                namespace: w.id.namespace.clone(),
                labels: w.labels.clone(),
                port: *number,
                port_name: name.clone(),
                ..InboundTarget::default()
            };
            let mut hits: Vec<&(&Entry, &Server)> =
                servers.iter().filter(|(_, s)| s.selects(&target)).collect();
            if hits.len() < 2 {
                continue;
            }
            hits.sort_by(|(_, a), (_, b)| a.precedence().cmp(&b.precedence()));
            let winner = &hits[0].1.id;
            for (loser, _) in &hits[1..] {
                out.push(Note {
                    origin: Some(loser.origin.clone()),
                    resource: Some(loser.res.clone()),
                    message: format!(
                        "selects port {number} of {} as Server {} does; {} applies there (the older, then the first by name)",
                        w.id, winner.name, winner.name
                    ),
                });
            }
        }
    }
}
