//! Coordinator addresses as people write them (`head:7700`, `head`, `[::1]:7700`), and the
//! reasons a dial fails, in plain words.

use std::fmt;
use std::net::IpAddr;

/// The port of the coordinator's binary protocol, when an address names none.
pub const DEFAULT_PORT: u16 = 7700;

/// A coordinator's address: a host (a name or an IP address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The host, without the brackets of an IPv6 address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Address {
    /// Reads `host:port`, `[v6]:port`, or a host alone (which gets [`DEFAULT_PORT`]).
    ///
    /// ```
    /// use drover::net::address::Address;
    /// assert_eq!(Address::parse("head").unwrap().to_string(), "head:7700");
    /// assert_eq!(Address::parse("[::1]:9000").unwrap().to_string(), "[::1]:9000");
    /// assert!(Address::parse("head:http").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        let bad = |why: &str| format!("{text:?} is not a coordinator address: {why}");
        if text.is_empty() {
            return Err("no coordinator address given (--coordinator HOST:PORT)".into());
        }
        if text.contains("://") {
            return Err(bad("give HOST:PORT, without a scheme"));
        }
        if text.contains(',') || text.contains(char::is_whitespace) {
            return Err(bad("give one HOST:PORT"));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Address {
                host: ip.to_string(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest
                    .split_once(']')
                    .ok_or_else(|| bad("an opening '[' without its ']'"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad("brackets hold an IPv6 address"));
                }
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(bad("expected ':PORT' after the ']'")),
                    },
                }
            }
            None => match text.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(bad("put an IPv6 address in brackets, as in [::1]:7700"))
                }
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            },
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(bad(&format!(
                        "the port {port:?} is not a number from 1 to 65535"
                    )))
                }
            },
        };
        Ok(Address {
            host: host.to_string(),
            port,
        })
    }
}

/// Reads a list of coordinators as given to `--coordinator` (`a:7700,b:7700`): one or more
/// addresses, each once, in the order given.
///
/// ```
/// use drover::net::address::parse_list;
/// let list = parse_list("a:7700, b").unwrap();
/// assert_eq!(list.iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["a:7700", "b:7700"]);
/// assert!(parse_list("a:7700,,b").is_err());
/// ```
pub fn parse_list(text: &str) -> Result<Vec<Address>, String> {
    if text.trim().is_empty() {
        return Err("no coordinator address given (--coordinator HOST:PORT[,HOST:PORT...])".into());
    }
    let mut list: Vec<Address> = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(format!(
                "{text:?} has an empty entry: give HOST:PORT, or several separated by commas"
            ));
        }
        let address = Address::parse(part)?;
        if !list.contains(&address) {
            list.push(address);
        }
    }
    Ok(list)
}

/// A list of addresses as people read it: `a:7700, b:7700`.
pub fn list_text(list: &[Address]) -> String {
    list.iter()
        .map(Address::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a dial failed, once and plainly: without the "(os error 111)" of the system's words, and
/// with what to check where that is clear.
pub fn dial_failure(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens there (is the coordinator running, and is this \
             its --listen address?)"
                .into()
        }
        ErrorKind::TimedOut => "no answer (timed out)".into(),
        _ => plain(error),
    }
}

/// Why a host name could not be looked up.
pub fn lookup_failure(host: &str, error: &std::io::Error) -> String {
    let text = plain(error);
    let why = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    format!("cannot find the host {host:?} ({})", lowercase_first(why))
}

/// The system's words for an error, without their "(os error N)", starting in lower case.
fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    lowercase_first(text)
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_people_write_them() {
        for (given, read) in [
            ("head:7700", "head:7700"),
            ("head", "head:7700"),
            (" head:9000 ", "head:9000"),
            ("10.0.0.5", "10.0.0.5:7700"),
            ("10.0.0.5:80", "10.0.0.5:80"),
            ("::1", "[::1]:7700"),
            ("[::1]", "[::1]:7700"),
            ("[fe80::1]:7701", "[fe80::1]:7701"),
        ] {
            assert_eq!(Address::parse(given).unwrap().to_string(), read, "{given}");
        }
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for (given, says) in [
            ("", "no coordinator address given"),
            ("http://head:7701", "without a scheme"),
            ("head:", "the port \"\" is not a number"),
            ("head:http", "the port \"http\" is not a number"),
            ("head:0", "from 1 to 65535"),
            ("head:70000", "from 1 to 65535"),
            (":7700", "the host is missing"),
            ("fe80::1:7700:x", "put an IPv6 address in brackets"),
            ("[head]:7700", "brackets hold an IPv6 address"),
            ("[::1", "without its ']'"),
            ("a:7700,b:7700", "give one HOST:PORT"),
        ] {
            let error = Address::parse(given).unwrap_err();
            assert!(error.contains(says), "{given}: {error}");
        }
    }

    #[test]
    fn lists_of_coordinators_are_read_in_order_each_once() {
        let list = parse_list("a:7700,b:7701, a:7700 ,[::1]").unwrap();
        assert_eq!(list_text(&list), "a:7700, b:7701, [::1]:7700");
        assert_eq!(parse_list("head").unwrap().len(), 1);
        for (given, says) in [
            ("", "no coordinator address given"),
            ("a:7700,", "an empty entry"),
            ("a:7700,b:http", "\"b:http\" is not a coordinator address"),
        ] {
            let error = parse_list(given).unwrap_err();
            assert!(error.contains(says), "{given}: {error}");
        }
    }

    #[test]
    fn system_errors_read_once_and_plainly() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let message = dial_failure(&refused);
        assert!(message.starts_with("connection refused: nothing listens there"));
        assert!(!message.contains("os error"));
        let other = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(dial_failure(&other), "network is unreachable");
    }
}
