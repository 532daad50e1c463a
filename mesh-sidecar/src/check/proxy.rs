//! `mesh check --proxy`, run inside a pod: the redirect `mesh init` installs is in place, the
//! proxy's own UID is left out of it, and the proxy's admin server says it is ready.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use super::report::{Category, Outcome};
use crate::init::{NatState, exec, plan};

const INIT_HINT: &str = "the pod's mesh-init container did not run or failed: \
    `kubectl logs POD -c mesh-init`; by hand, `mesh init` as root in the pod's network namespace";

/// The in-pod checks: iptables first, then the admin server.
pub(crate) async fn checks(proxy_uid: u32, admin: SocketAddr) -> Vec<Category> {
    let mut c = Category::new("mesh-proxy");
    let mode = exec::detect();
    let save = exec::run(&plan::Cmd::new(&mode.save(plan::Family::V4), &[]));
    match save {
        Ok(save) => {
            c.push("the iptables redirect is installed", redirect(&save));
            c.push(
                format!("the proxy's UID {proxy_uid} is not redirected"),
                uid_excluded(&save, proxy_uid),
            );
        }
        Err(e) => c.push(
            "the iptables redirect is installed",
            Outcome::error(
                format!("cannot read the rules: {e}"),
                "run as root (NET_ADMIN)",
            ),
        ),
    }
    c.push(
        format!("the proxy's admin server on {admin} is ready"),
        ready(admin).await,
    );
    vec![c]
}

/// Both of our chains exist and something jumps into each.
fn redirect(save: &str) -> Outcome {
    let state = NatState::parse(save);
    let missing: Vec<&str> = (plan::JUMPS.iter().zip(state.jumps))
        .filter(|((_, chain), jumps)| *jumps == 0 || !state.chains.contains(*chain))
        .map(|((from, _), _)| *from)
        .collect();
    match missing.is_empty() {
        true => Outcome::Success,
        false => Outcome::error(
            format!("no redirect from {} in the nat table", missing.join(" or ")),
            INIT_HINT,
        ),
    }
}

/// Our output chain returns early for the proxy's UID, or the proxy would loop into itself.
fn uid_excluded(save: &str, uid: u32) -> Outcome {
    let owner = format!("--uid-owner {uid} ");
    let found = save.lines().any(|l| {
        l.starts_with(&format!("-A {} ", plan::OUTPUT_CHAIN))
            && l.contains(&owner)
            && l.ends_with("-j RETURN")
    });
    match found {
        true => Outcome::Success,
        false => Outcome::error(
            format!("no rule lets UID {uid} out unredirected"),
            format!(
                "the proxy must run as the UID `mesh init --proxy-uid` was given ({uid}?); {INIT_HINT}"
            ),
        ),
    }
}

/// `GET /ready` on the admin address answers 200.
async fn ready(admin: SocketAddr) -> Outcome {
    let hint = "is the proxy running? `kubectl logs POD -c mesh-proxy`; \
        its admin address is `mesh proxy --admin-addr` (127.0.0.1:4191 by default)";
    let get = async {
        let tcp = tokio::net::TcpStream::connect(admin).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let req = http::Request::get("/ready")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(std::io::Error::other)?;
        let rsp = send
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>((status, body.to_bytes()))
    };
    match tokio::time::timeout(Duration::from_secs(5), get).await {
        Ok(Ok((status, _))) if status.is_success() => Outcome::Success,
        Ok(Ok((status, body))) => Outcome::error(
            format!(
                "/ready answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
            hint,
        ),
        Ok(Err(e)) => Outcome::error(format!("cannot reach {admin}: {e}"), hint),
        Err(_) => Outcome::error(format!("{admin} did not answer within 5s"), hint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLED: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MESH_INIT_OUTPUT - [0:0]
:MESH_INIT_REDIRECT - [0:0]
-A PREROUTING -j MESH_INIT_REDIRECT
-A OUTPUT -j MESH_INIT_OUTPUT
-A MESH_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN
-A MESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140
-A MESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143
COMMIT
";

    #[test]
    fn rules_are_read_from_the_save_output() {
        assert_eq!(redirect(INSTALLED), Outcome::Success);
        assert_eq!(uid_excluded(INSTALLED, 2102), Outcome::Success);
        assert!(uid_excluded(INSTALLED, 1000).is_error());
        let no_jump = INSTALLED.replace("-A PREROUTING -j MESH_INIT_REDIRECT\n", "");
        assert!(redirect(&no_jump).is_error());
        assert!(redirect("").is_error());
    }
}
