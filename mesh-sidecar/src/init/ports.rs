//! Ports and port ranges as `--skip-inbound-ports`/`--skip-outbound-ports` take them and
//! as iptables' multiport match prints them.

use std::fmt;
use std::str::FromStr;

/// A port or an inclusive range of ports, written `80` or `4000-5000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortRange {
    first: u16,
    last: u16,
}

/// A comma-separated list of ports and ranges, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PortList(pub(crate) Vec<PortRange>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid port or range {0:?}: expected a port 1-65535 or a range like 4000-5000")]
pub(crate) struct InvalidPort(String);

// === impl PortRange ===

impl PortRange {
    pub(crate) fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// How many of the multiport match's 15 slots this takes.
    pub(crate) fn weight(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

impl FromStr for PortRange {
    type Err = InvalidPort;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPort(s.to_owned());
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(p) => Ok(p),
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(invalid());
        }
        Ok(Self { first, last })
    }
}

/// iptables' own syntax, `4000:5000`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

// === impl PortList ===

impl FromStr for PortList {
    type Err = InvalidPort;

    /// Empty items are allowed, so `""` and `"80,"` (as templates tend to produce) parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> Vec<PortRange> {
        s.parse::<PortList>().unwrap().0
    }

    #[test]
    fn port_ranges_parse() {
        let ok = [
            ("80", "80"),
            ("4000-5000", "4000:5000"),
            (" 7 - 7 ", "7"),
            ("65535", "65535"),
        ];
        for (input, shown) in ok {
            assert_eq!(
                input.parse::<PortRange>().unwrap().to_string(),
                shown,
                "{input}"
            );
        }
        for bad in [
            "0",
            "65536",
            "5000-4000",
            "http",
            "1-2-3",
            "",
            "-5",
            "80:90",
        ] {
            assert_eq!(
                bad.parse::<PortRange>(),
                Err(InvalidPort(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(ports(""), vec![]);
        assert_eq!(ports("80,"), vec![PortRange::single(80)]);
        assert!("80,x".parse::<PortList>().is_err());
    }
}
