//! The destination a connection had before iptables redirected it (`SO_ORIGINAL_DST`), read
//! through `nix`, so this crate keeps `unsafe_code = "forbid"`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tokio::net::TcpStream;

/// The original destination of a redirected connection.
pub(crate) fn original_dst(tcp: &TcpStream) -> io::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let local = tcp.local_addr()?;
    if local.is_ipv4() {
        let sin = getsockopt(tcp, sockopt::OriginalDst).map_err(io::Error::from)?;
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(sin.sin_port),
        )))
    } else {
        let sin6 = getsockopt(tcp, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(sin6.sin6_port),
            0,
            0,
        )))
    }
}
