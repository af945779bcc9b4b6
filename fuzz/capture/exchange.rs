//! A captured exchange: the SIP messages one peer and another sent each other, in order.

/// One message as it went over the wire, in either direction.
#[derive(Clone, Debug)]
pub struct Message {
    pub bytes: Vec<u8>,
}

impl Message {
    pub fn is_response(&self) -> bool {
        uacreg::sip::message::is_response(&self.bytes)
    }
}

/// The messages of one conversation, named after who talked (`registrar`, `kamailio`,
/// `sipp`) and what happened.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub source: &'static str,
    pub name: String,
    pub messages: Vec<Message>,
}

impl Exchange {
    pub fn new(source: &'static str, name: &str) -> Exchange {
        Exchange {
            source,
            name: name.to_string(),
            messages: Vec::new(),
        }
    }

    /// `source-name`, the stem of the seed files cut from it.
    pub fn stem(&self) -> String {
        format!("{}-{}", self.source, self.name)
    }
}

/// Reads sipp's message log (`-trace_msg`): blocks that start with a line of dashes, then
/// `UDP message sent (N bytes):` or `UDP message received [N] bytes :`, an empty line, and the
/// N bytes of the message.
pub fn from_sipp_log(log: &[u8], name: &str) -> Exchange {
    let mut exchange = Exchange::new("sipp", name);
    let mut rest = log;
    while let Some(start) = find(rest, b"UDP message ") {
        rest = &rest[start..];
        let Some(line_end) = find(rest, b"\n") else {
            break;
        };
        let line = String::from_utf8_lossy(&rest[..line_end]).to_string();
        let count: Option<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .find(|part| !part.is_empty())
            .and_then(|digits| digits.parse().ok());
        // The line, then an empty line, then the message.
        let body_start = line_end + 2;
        match count {
            Some(n) if body_start + n <= rest.len() => {
                exchange.messages.push(Message {
                    bytes: rest[body_start..body_start + n].to_vec(),
                });
                rest = &rest[body_start + n..];
            }
            _ => rest = &rest[line_end..],
        }
    }
    exchange
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
