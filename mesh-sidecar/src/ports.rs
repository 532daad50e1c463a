//! Loopback ports for a process that binds them later (the demo's proxies and issuer; the
//! tests' children).
//!
//! A port picked by binding port 0 comes from the kernel's ephemeral range, the same range
//! every outgoing connection takes its source port from: released, it can be taken by any
//! connection opened in between, and the child that binds it later fails. These ports come
//! from below that range, where the kernel never hands a port out on its own, so only another
//! process binding that very port could take one; each is checked free when it is picked, and
//! a process never picks the same port twice.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: below it live well-known and registered services.
pub(crate) const FLOOR: u16 = 10_000;

/// A loopback address whose port is free now and not in the ephemeral range.
pub(crate) fn unused_loopback_port() -> std::io::Result<SocketAddr> {
    let ceiling = ephemeral_low().unwrap_or(32_768);
    if ceiling <= FLOOR + 1_000 {
        // No room below the ephemeral range: the kernel's choice is all there is.
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr();
    }
    let span = u32::from(ceiling - FLOOR);
    // Each process starts somewhere else, so two of them rarely try the same ports.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        fastrand::u32(0..span),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = FLOOR + u16::try_from(offset).unwrap_or(0);
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return l.local_addr();
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// The low end of Linux's ephemeral port range, where it can be read.
pub(crate) fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}
