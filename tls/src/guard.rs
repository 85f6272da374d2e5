//! Links that end with the certificate that opened them (issue 17 item 5). A handshake checks
//! the other side's certificate once; a replica stream, an event subscription or a file
//! transfer can outlive that check by hours. [`Guarded`] wraps an established TLS stream and
//! fails its next read or write once the other side's certificate is revoked (its serial in
//! the shared revocations) or past its notAfter: the link drops at its next I/O, which HTTP/2
//! keep-alive pings bound to seconds on an idle link.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{SharedRevocations, now_unix};

/// A stream watched for the standing of the certificate the other side presented.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    /// The other side's certificate serial and notAfter (Unix seconds); `None` when it
    /// presented none (an anonymous client of the CA): nothing to watch.
    certificate: Option<(Vec<u8>, i64)>,
    revoked: SharedRevocations,
    /// The revocations' generation last looked at: a lookup only when it moved.
    seen: u64,
    /// Why the link ended, once it did.
    ended: Option<&'static str>,
}

impl<S> Guarded<S> {
    /// Watches `inner`, whose other side presented `certificate` (DER; `None` if none),
    /// against `revoked`. A certificate that cannot be read ends the link at once.
    pub fn new(inner: S, certificate: Option<&[u8]>, revoked: SharedRevocations) -> Guarded<S> {
        let (certificate, ended) = match certificate.map(medledger_crypto::serial_and_not_after) {
            None => (None, None),
            Some(Ok(standing)) => (Some(standing), None),
            Some(Err(_)) => (None, Some("the other side's certificate is unreadable")),
        };
        Guarded {
            inner,
            certificate,
            revoked,
            seen: u64::MAX,
            ended,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The notAfter (Unix seconds) of the other side's certificate, when it presented one.
    pub fn not_after(&self) -> Option<i64> {
        self.certificate.as_ref().map(|(_, not_after)| *not_after)
    }

    /// Whether the link may still carry bytes; once not, never again.
    fn standing(&mut self) -> io::Result<()> {
        if self.ended.is_none()
            && let Some((serial, not_after)) = &self.certificate
        {
            if now_unix() > *not_after {
                self.ended = Some("the other side's certificate expired");
            } else {
                let generation = self.revoked.generation();
                if generation != self.seen {
                    self.seen = generation;
                    if self.revoked.contains(serial) {
                        self.ended = Some("the other side's certificate was revoked");
                    }
                }
            }
        }
        match self.ended {
            None => Ok(()),
            Some(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.standing()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.standing()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.standing()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// As the stream it wraps: HTTP/2 writes a frame's header and body in one record when it
    /// can.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.standing()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The server side keeps tonic's view of the connection (the client's certificates, its
/// address), so handlers still see who called.
impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A certificate of the fixture network (any well-formed one will do).
    fn certificate() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/fixtures/clinician.der"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_link_ends_when_the_other_sides_certificate_is_revoked() {
        let der = certificate();
        let (serial, _) = medledger_crypto::serial_and_not_after(&der).unwrap();
        let revoked = SharedRevocations::default();
        let (near, mut far) = tokio::io::duplex(64);
        let mut link = Guarded::new(near, Some(&der), revoked.clone());
        far.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        link.read_exact(&mut buf).await.unwrap();
        link.write_all(b"pong").await.unwrap();
        // Another serial changes nothing.
        revoked.insert(vec![1, 2, 3]);
        link.write_all(b"more").await.unwrap();
        revoked.insert(serial);
        let write = link.write_all(b"after").await.unwrap_err();
        assert_eq!(write.kind(), io::ErrorKind::PermissionDenied);
        assert!(write.to_string().contains("revoked"), "{write}");
        far.write_all(b"late").await.unwrap();
        let read = link.read(&mut buf).await.unwrap_err();
        assert_eq!(read.kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn an_expired_or_unreadable_certificate_ends_the_link_and_none_is_not_watched() {
        let (near, _far) = tokio::io::duplex(64);
        // An unreadable certificate: nothing passes.
        let mut link = Guarded::new(
            near,
            Some(b"not a certificate"),
            SharedRevocations::default(),
        );
        assert!(link.write_all(b"x").await.is_err());
        // Expired: a notAfter in the past.
        let (near, _far) = tokio::io::duplex(64);
        let mut link = Guarded::new(near, None, SharedRevocations::default());
        link.certificate = Some((vec![9], now_unix() - 1));
        let e = link.write_all(b"x").await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // No certificate (an anonymous CA client): a plain stream.
        let (near, mut far) = tokio::io::duplex(64);
        let revoked = SharedRevocations::default();
        revoked.insert(vec![9]);
        let mut link = Guarded::new(near, None, revoked);
        link.write_all(b"ok").await.unwrap();
        let mut buf = [0u8; 2];
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}
