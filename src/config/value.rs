//! How values are written in the TOML file, and how each becomes the type the daemon uses.
//!
//! Every function here is a serde `deserialize_with` for one kind of value: a period in whole
//! seconds where 0 means "off", an `ip:port`, a list of sockets. Keeping them here means the
//! config structs carry the types they mean (`Duration`, `SocketAddr`) and each key's rule is one
//! attribute. A bad value's message says what was expected; [`super::Config::from_toml`] adds the
//! key it stood under.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error};

use crate::registration::record::LocalSocket;

/// Parses `ip:port` (IPv6 in brackets); the message names the text.
pub(crate) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an ip:port address"))
}

/// `"ip:port"`.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// `"ip:port"`, or `""` for none.
pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    parse_socket_addr(&text).map(Some).map_err(D::Error::custom)
}

/// A string, `""` being none.
pub fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then_some(text))
}

/// A file path, `""` being none.
pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_text(d)?.map(PathBuf::from))
}

/// Whole seconds.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// Whole seconds, 0 taken as 1: a period or bound of zero would spin or fail everything.
pub fn seconds_at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(|secs| Duration::from_secs(secs.max(1)))
}

/// Whole seconds, 0 switching the thing off.
pub fn seconds_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let secs = u64::deserialize(d)?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// Milliseconds, 0 taken as 1.
pub fn millis_at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(|ms| Duration::from_millis(ms.max(1)))
}

/// A count where 0 means "no limit".
pub fn count_or_unlimited<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let count = u32::deserialize(d)?;
    Ok((count > 0).then_some(count))
}

/// Whole seconds as a number, at least 1.
pub fn at_least_one_second<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1 second")),
        secs => Ok(secs),
    }
}

/// A share from 0 to 1 (an integer 0 or 1 is fine too).
pub fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let share = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(D::Error::custom(format!(
            "{share} is not a fraction between 0 and 1"
        )))
    }
}

/// A value written as text and read by its `FromStr` (`"strip"`, `"203.0.113.0/24"`), whose
/// error says what was wrong.
pub fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    String::deserialize(d)?.parse().map_err(D::Error::custom)
}

/// A list of such values.
pub fn each_parsed<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| text.parse().map_err(D::Error::custom))
        .collect()
}

/// Local sockets: `["udp:10.0.0.5:5060", "tcp:10.0.0.5:5060"]`.
pub fn local_sockets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LocalSocket>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            LocalSocket::parse(text).ok_or_else(|| {
                D::Error::custom(format!("{text:?} is not proto:ip:port (udp, tcp or tls)"))
            })
        })
        .collect()
}

/// Name servers: `"ip"` (port 53) or `"ip:port"`.
pub fn name_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| D::Error::custom(format!("{text:?} is not an ip or ip:port")))
        })
        .collect()
}
