//! Strict HTTP/1 framing at the edge: a request whose head (or chunk-size line or trailer)
//! ends a line with a bare LF is refused with `400 bad_framing` and its connection closed.
//!
//! hyper, as RFC 9112 allows, takes a bare LF as a line end, so `X-A: 1\nX-B: 2` is two
//! headers to it but one to a proxy that only splits on CRLF: the gap request smuggling
//! lives in. hyper has no switch for it, so [`StrictFraming`] watches the bytes on their
//! way to hyper. To know which bytes are heads it follows each message's framing as hyper
//! does: `Content-Length` bodies are skipped by count, chunked bodies chunk by chunk (their
//! size lines and trailers checked too), and HTTP/2 (h2c), `CONNECT` and upgrades are left
//! alone once their head has passed. Bodies are never scanned, so the cost is a pass over
//! each head.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head longer than this is hyper's to refuse (its own limit is lower); not followed.
const MAX_HEAD: usize = 1 << 20;

/// What the client gets before the connection closes.
const REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
content-length: 96\r\n\r\n{\"error\":{\"code\":\"bad_framing\",\"message\":\"a line of the request ends with a bare LF, not CRLF\"}}";

/// Where in the request stream the next byte falls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A message head (or the empty lines before one), collected until its blank line.
    Head(Vec<u8>),
    /// This many body bytes to go.
    Body(u64),
    /// A chunk-size line, collected until its end.
    ChunkSize(Vec<u8>),
    /// This many bytes of chunk data, then its CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data: how many of its bytes have passed.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, collected until the blank line.
    Trailers(Vec<u8>),
    /// Not HTTP/1 framing any more (h2c, CONNECT, an upgrade, a head past the limit).
    Passthrough,
}

/// Follows the framing of the requests on one connection. Pure: fed bytes, says whether
/// they are well framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    state: State,
}

impl Default for Tracker {
    fn default() -> Self {
        Self { state: State::Head(Vec::new()) }
    }
}

/// A bare LF ended a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a line of the request ends with a bare LF, not CRLF")]
pub struct BareLf;

impl Tracker {
    /// Feeds the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), BareLf> {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Passthrough => return Ok(()),
                State::Body(left) | State::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Head(Vec::new()),
                            _ => State::ChunkEnd(0),
                        };
                    }
                    n as usize
                }
                State::ChunkEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if bytes[0] != want {
                        return Err(BareLf);
                    }
                    *seen += 1;
                    if *seen == 2 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                    1
                }
                State::Head(_) | State::ChunkSize(_) | State::Trailers(_) => self.collect(bytes)?,
            };
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// Takes bytes of a head, size line or trailers; moves on once it is complete.
    fn collect(&mut self, bytes: &[u8]) -> Result<usize, BareLf> {
        let section = match self.state {
            State::Head(_) => Section::Head,
            State::Trailers(_) => Section::Trailers,
            _ => Section::Line,
        };
        let (used, done) = take_lines(self.collected(), bytes, section)?;
        if done {
            let collected = std::mem::take(self.collected());
            self.state = self.next_after(collected);
        } else if self.collected().len() > MAX_HEAD {
            self.state = State::Passthrough;
        }
        Ok(used)
    }

    fn collected(&mut self) -> &mut Vec<u8> {
        match &mut self.state {
            State::Head(b) | State::ChunkSize(b) | State::Trailers(b) => b,
            _ => unreachable!("only called while collecting"),
        }
    }

    /// The state once a collected head, size line or trailer section is complete.
    fn next_after(&self, collected: Vec<u8>) -> State {
        match self.state {
            State::Head(_) => after_head(&collected),
            State::ChunkSize(_) => {
                let line = String::from_utf8_lossy(&collected);
                let size = line.trim_end().split(';').next().unwrap_or("").trim();
                match u64::from_str_radix(size, 16) {
                    Ok(0) => State::Trailers(Vec::new()),
                    Ok(n) => State::ChunkData(n),
                    // hyper refuses it; nothing more to follow.
                    Err(_) => State::Passthrough,
                }
            }
            _ => State::Head(Vec::new()),
        }
    }
}

/// What is being collected, and so where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// A message head: at its blank line; empty lines before it are skipped.
    Head,
    /// Trailers: at the first blank line, which may be the very first line.
    Trailers,
    /// One line (a chunk size).
    Line,
}

/// Takes bytes into `collected` up to the end of the section. Returns how many were taken
/// and whether the section ended; a LF without its CR refuses.
fn take_lines(collected: &mut Vec<u8>, bytes: &[u8], section: Section) -> Result<(usize, bool), BareLf> {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            if collected.last() != Some(&b'\r') {
                return Err(BareLf);
            }
            collected.push(b);
            let ended = match section {
                // Empty lines before a request line are skipped, as hyper does.
                Section::Head if collected.len() == 2 => {
                    collected.clear();
                    false
                }
                Section::Trailers if collected.len() == 2 => true,
                Section::Head | Section::Trailers => collected.ends_with(b"\r\n\r\n"),
                Section::Line => true,
            };
            if ended {
                return Ok((i + 1, true));
            }
        } else {
            collected.push(b);
        }
    }
    Ok((bytes.len(), false))
}

/// How the message whose head is `head` goes on.
fn after_head(head: &[u8]) -> State {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    if request_line.starts_with("PRI * HTTP/2") || request_line.starts_with("CONNECT ") {
        return State::Passthrough;
    }
    let (mut length, mut chunked, mut upgrade) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = length.or(value.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    match (upgrade, chunked, length) {
        (true, _, _) => State::Passthrough,
        (_, true, _) => State::ChunkSize(Vec::new()),
        (_, _, Some(n)) if n > 0 => State::Body(n),
        _ => State::Head(Vec::new()),
    }
}

/// A connection whose requests are checked by a [`Tracker`] before hyper reads them.
pub struct StrictFraming<S> {
    inner: S,
    tracker: Tracker,
    refused: bool,
}

impl<S> StrictFraming<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self { inner, tracker: Tracker::default(), refused: false }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for StrictFraming<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.refused {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, BareLf)));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if let Err(refusal) = this.tracker.feed(&buf.filled()[before..]) {
            // hyper never sees these bytes; the client hears why, if its socket takes it.
            buf.set_filled(before);
            this.refused = true;
            let _ = Pin::new(&mut this.inner).poll_write(cx, REFUSAL);
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refusal)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StrictFraming<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn feed_all(parts: &[&[u8]]) -> Result<Tracker, BareLf> {
        let mut t = Tracker::default();
        for p in parts {
            t.feed(p)?;
        }
        Ok(t)
    }

    #[test]
    fn the_refusal_says_its_length_right() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{text}");
    }

    #[test]
    fn a_bare_lf_in_any_head_line_is_refused() {
        assert!(feed_all(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).is_ok());
        assert_eq!(feed_all(&[b"GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n"]).unwrap_err(), BareLf);
        assert_eq!(feed_all(&[b"GET / HTTP/1.1\n"]).unwrap_err(), BareLf);
        // A CR in one read, its LF in the next, is fine.
        assert!(feed_all(&[b"GET / HTTP/1.1\r", b"\nHost: x\r\n\r", b"\n"]).is_ok());
        // Empty lines before a request are allowed; bare ones are not.
        assert!(feed_all(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]).is_ok());
        assert!(feed_all(&[b"\nGET / HTTP/1.1\r\n\r\n"]).is_err());
    }

    #[test]
    fn bodies_are_skipped_and_the_next_request_is_checked() {
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\na\nb\ncGET / HTTP/1.1\r\n\r\n";
        let t = feed_all(&[ok]).unwrap();
        assert_eq!(t.state, State::Head(Vec::new()));
        let smuggled = b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nabGET / HTTP/1.1\nX: y\r\n\r\n";
        assert!(feed_all(&[smuggled]).is_err(), "the second request's head is checked");
    }

    #[test]
    fn chunked_bodies_are_followed_chunk_by_chunk() {
        let ok = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                   4;ext=1\r\na\nbc\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(feed_all(&[ok]).unwrap().state, State::Head(Vec::new()));
        let bare_size = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n";
        assert!(feed_all(&[bare_size]).is_err());
        let bare_after_data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\n0\r\n\r\n";
        assert!(feed_all(&[bare_after_data]).is_err());
        let bare_trailer = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\n\r\n";
        assert!(feed_all(&[bare_trailer]).is_err());
    }

    #[test]
    fn h2c_connect_and_upgrades_are_left_alone() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\n\n\n";
        assert_eq!(feed_all(&[h2]).unwrap().state, State::Passthrough);
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\n\n";
        assert_eq!(feed_all(&[ws]).unwrap().state, State::Passthrough);
    }

    proptest! {
        /// However the bytes are split into reads, the verdict and the state are the same.
        #[test]
        fn reads_may_split_anywhere(cuts in proptest::collection::vec(0usize..200, 0..8), bare in any::<bool>()) {
            let mut stream = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nx\ny\r\n0\r\n\r\n\
                               PUT /b HTTP/1.1\r\nContent-Length: 4\r\n\r\n\n\n\n\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
            if bare {
                let at = stream.len() - 4;
                stream.remove(at); // "Host: h\r\n" loses its CR
            }
            let whole = feed_all(&[&stream]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            points.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                parts.push(&stream[last..p]);
                last = p;
            }
            parts.push(&stream[last..]);
            prop_assert_eq!(feed_all(&parts), whole.clone());
            prop_assert_eq!(whole.is_err(), bare);
        }
    }
}
