//! A minimal HTTP/1.1 client for uacregd's loopback endpoints that hands the body over as a
//! stream.
//!
//! The body of `uac.reg_dump` grows with the table (about 700 bytes a row: 700 MB at 1,000,000
//! rows). Holding it — let alone de-chunking it into a second copy — would make the tool's own
//! memory the limit of the measurement, so the body is read through [`Body`], which removes the
//! chunked framing on the fly and keeps one buffer of a fixed size. The clock of a call stops
//! when its reader has seen the last byte, so what is timed is the server's answer at the speed
//! of a reader that does little per byte.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest wait for any one read: a 1,000,000-row reg_dump takes seconds, not minutes.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Response heads are a few hundred bytes; anything longer is not the server we expect.
const MAX_HEAD: usize = 16 * 1024;
/// The buffer between the socket and the reader of the body.
const BUFFER: usize = 64 * 1024;

/// Sends one request (`Connection: close`) and returns the body of its `200` answer as a
/// stream. Any other status is an error carrying the head.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> io::Result<Body<BufReader<TcpStream>>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::with_capacity(BUFFER, stream);
    let head = read_head(&mut reader)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("HTTP answer: {head}")));
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(Body::chunked(reader));
    }
    let framing = match header("content-length") {
        Some(length) => Framing::Length {
            left: length
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length: {length}")))?,
        },
        None => Framing::UntilClose,
    };
    Ok(Body { reader, framing })
}

/// Reads up to and including the blank line that ends the head.
fn read_head(reader: &mut impl BufRead) -> io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        reader.take(1024).read_until(b'\n', &mut head)?;
        if head.len() == before {
            return Err(io::Error::other("connection closed inside the HTTP head"));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("HTTP head too long"));
        }
    }
    head.truncate(head.len() - 4);
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// How the body's end is known.
enum Framing {
    /// `Content-Length`: bytes still to come.
    Length { left: u64 },
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk; `done` after the last.
    Chunked { left: u64, done: bool },
    /// Neither: the server closes the connection after the body.
    UntilClose,
}

/// The body of an answer, without its transfer framing.
pub struct Body<R> {
    reader: R,
    framing: Framing,
}

impl<R: BufRead> Body<R> {
    /// A chunked body read from `reader` (what follows the head).
    pub fn chunked(reader: R) -> Body<R> {
        Body {
            reader,
            framing: Framing::Chunked {
                left: 0,
                done: false,
            },
        }
    }

    /// The whole body, for answers known to be small.
    pub fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.framing {
            Framing::UntilClose => self.reader.read(out),
            Framing::Length { left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let wanted = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut out[..wanted])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body shorter than its Content-Length",
                    ));
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    *left = next_chunk_size(&mut self.reader)?;
                    if *left == 0 {
                        skip_trailers(&mut self.reader)?;
                        *done = true;
                        return Ok(0);
                    }
                }
                let wanted = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut out[..wanted])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
                *left -= n as u64;
                if *left == 0 {
                    expect_crlf(&mut self.reader)?;
                }
                Ok(n)
            }
        }
    }
}

/// One short line (a chunk size or a trailer), without its CRLF.
fn short_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.take(1024).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::other("bad chunk framing: line without CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The size line of the next chunk (extensions after `;` ignored).
fn next_chunk_size(reader: &mut impl BufRead) -> io::Result<u64> {
    let line = short_line(reader)?;
    let size = line.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(size, 16)
        .map_err(|_| io::Error::other(format!("bad chunk size line: {line:.40}")))
}

fn expect_crlf(reader: &mut impl BufRead) -> io::Result<()> {
    if short_line(reader)?.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other("bad chunk framing: data after a chunk"))
    }
}

/// Trailer lines after the last chunk, up to the empty line (at most 100).
fn skip_trailers(reader: &mut impl BufRead) -> io::Result<()> {
    for _ in 0..100 {
        if short_line(reader)?.is_empty() {
            return Ok(());
        }
    }
    Err(io::Error::other("too many trailer lines"))
}
