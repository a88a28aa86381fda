//! Network interface control inside a container's network namespace.

use std::os::fd::AsRawFd;

use nix::{
    errno::Errno,
    sys::socket::{AddressFamily, SockFlag, SockType, socket},
};

/// Brings interface `name` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP).
pub fn set_link_up(name: &str) -> nix::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: `req` is a valid ifreq naming the interface; SIOCGIFFLAGS
    // writes only its flags field.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// A socket to address interface and route ioctls to.
fn ioctl_socket() -> nix::Result<std::os::fd::OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn ifreq_for(name: &str) -> nix::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(Errno::EINVAL);
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_v4(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and
    // every bit pattern of either is valid; the kernel reads it as
    // sockaddr_in because sin_family says AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Gives interface `name` the IPv4 address `addr/prefix`
/// (SIOCSIFADDR, then SIOCSIFNETMASK).
pub fn set_ipv4(name: &str, addr: std::net::Ipv4Addr, prefix: u8) -> nix::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    // SAFETY: a valid ifreq naming the interface and holding an AF_INET
    // address; SIOCSIFADDR only reads it.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &req) })?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    req.ifr_ifru.ifru_netmask = sockaddr_v4(std::net::Ipv4Addr::from(mask));
    // SAFETY: as above, with the netmask.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &req) })?;
    Ok(())
}

/// Adds a default IPv4 route via `gateway` (SIOCADDRT).
pub fn add_default_route(gateway: std::net::Ipv4Addr) -> nix::Result<()> {
    let sock = ioctl_socket()?;
    // SAFETY: rtentry is plain data (and a null rt_dev); all-zero is valid.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr_v4(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: a fully initialised rtentry; SIOCADDRT only reads it.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &route) })?;
    Ok(())
}
