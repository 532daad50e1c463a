//! Two `mesh controller` replicas against the test API server elect one canary driver with a
//! `coordination.k8s.io/v1` Lease (two drivers would each move a canary's weights every
//! interval); when the leader dies, the other takes over once the Lease has gone unrenewed
//! for its duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::apiserver::ApiServer;
use support::controller::Controller;
use support::pods::{Trust, free_port};

/// The Lease's duration (15 s), two retry periods and slack for a loaded machine.
const TAKE_OVER: Duration = Duration::from_secs(40);

/// The holder id a controller logged when it won the Lease, if it did.
fn leads(c: &Controller) -> Option<String> {
    let log = c.log();
    let line = log
        .lines()
        .rfind(|l| l.contains("canary leadership changed"))?;
    if !line.contains("leads=true") {
        return None;
    }
    let holder = line.split("holder=").nth(1)?.split_whitespace().next()?;
    Some(holder.to_owned())
}

fn lease(api: &ApiServer) -> Option<Value> {
    api.get(
        "coordination.k8s.io",
        "leases",
        "mesh",
        "mesh-controller-canary",
    )
}

fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_replica_drives_canaries_and_another_takes_over_when_it_dies() {
    let api = ApiServer::start();
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: mesh }\n");
    let trust = Trust::new();
    trust.issue(&["mesh-controller"]);
    let kubeconfig = api.kubeconfig(&trust.dir);
    let start = |name: &str| {
        let dir = trust.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Controller::start(
            &kubeconfig,
            &trust.certs("mesh-controller"),
            free_port(),
            &dir,
        )
    };
    let (a, b) = (start("a"), start("b"));
    a.wait_ready();
    b.wait_ready();

    // Exactly one leads, and the Lease names it.
    let (a_leads, holder) = until("a leader", TAKE_OVER, || match (leads(&a), leads(&b)) {
        (Some(_), Some(_)) => panic!("both replicas lead:\n{}\n{}", a.log(), b.log()),
        (Some(h), None) => Some((true, h)),
        (None, Some(h)) => Some((false, h)),
        (None, None) => None,
    });
    let spec = lease(&api).expect("the Lease exists")["spec"].clone();
    assert_eq!(spec["holderIdentity"], holder.as_str(), "{spec}");
    assert_eq!(spec["leaseDurationSeconds"], 15, "{spec}");
    // It stays with the leader, which renews it.
    std::thread::sleep(Duration::from_secs(5));
    let now = lease(&api).unwrap()["spec"].clone();
    assert_eq!(now["holderIdentity"], holder.as_str(), "{now}");
    assert_ne!(now["renewTime"], spec["renewTime"], "the leader renews");

    // The leader dies; the other replica takes over.
    let survivor = if a_leads {
        drop(a);
        b
    } else {
        drop(b);
        a
    };
    let new_holder = until("the other replica to take over", TAKE_OVER, || {
        leads(&survivor)
    });
    assert_ne!(new_holder, holder);
    let spec = lease(&api).unwrap()["spec"].clone();
    assert_eq!(spec["holderIdentity"], new_holder.as_str(), "{spec}");
    assert_eq!(spec["leaseTransitions"], 1, "{spec}");
}
