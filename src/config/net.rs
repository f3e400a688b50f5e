//! Address prefixes such as `10.0.0.0/8` or `::1`: the sources `server.per_ip_exempt`
//! lets past the per-address limits.
//!
//! Why hand-written: parsing `address[/length]` and testing membership is a few lines
//! over the standard library's address types, and the one use (a short list checked
//! once per accepted connection) needs nothing a crate would add.

use std::net::IpAddr;

/// An address prefix: `addr` with its first `len` bits significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    len: u8,
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/n` (n ≤ 32), `x:y::z` or `x:y::z/n` (n ≤ 128); a bare
    /// address is the prefix of that address alone. The bits past the length must be
    /// zero (`10.0.0.1/8` is refused as a likely typo).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or prefix (a.b.c.d/n, x::y/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        let net = IpNet { addr, len };
        if net.network() != bits(addr) {
            return Err(format!(
                "{text:?} has bits set past its /{len} (did you mean {}/{len}?)",
                net.first()
            ));
        }
        Ok(net)
    }

    /// Whether `ip` is in the prefix (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let mask = mask(self.addr, self.len);
        bits(ip) & mask == self.network()
    }

    fn network(&self) -> u128 {
        bits(self.addr) & mask(self.addr, self.len)
    }

    fn first(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4((self.network() as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(self.network().into()),
        }
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The mask of the first `len` bits of an address of `ip`'s family.
fn mask(ip: IpAddr, len: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if len == 0 {
        return 0;
    }
    let all = if width == 32 {
        u32::MAX as u128
    } else {
        u128::MAX
    };
    // (A shift by the whole width would overflow: `/32` and `/128` are all ones.)
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_their_addresses_and_nothing_else() {
        let lo = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.0.9")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        assert!(
            lo.contains(ip("::ffff:127.0.0.5")),
            "an IPv4-mapped address is its IPv4 address"
        );
        let one = IpNet::parse("::1").unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.7")));
        assert!(!all.contains(ip("2001:db8::1")));
        assert!(IpNet::parse("10.1.2.3/32")
            .unwrap()
            .contains(ip("10.1.2.3")));
    }

    #[test]
    fn malformed_prefixes_are_refused_saying_why() {
        for (text, why) in [
            ("localhost", "not an IP address"),
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ] {
            let e = IpNet::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
