//! The client side of one subscriber: a TCP socket bound to a chosen
//! loopback source address, with kernel receive timestamps.
//!
//! `SO_TIMESTAMPNS` makes the kernel stamp each received segment; reading
//! with `recvmsg` hands that stamp back with the data. The generator
//! measures a frame's lag against it, so the lag does not include the time
//! the generator itself takes to get round to reading that socket (it
//! records that too, separately, as the "app" lag).
//!
//! The kernel switches receive stamping on (globally) in deferred work when
//! the first socket asks for it, so the very first segments of a run may
//! come without a stamp; those frames fall back to the read time and the
//! report says so (`kernel_timestamps: false`) if any were in the window.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP stream that remembers the kernel receive time of the last data read.
pub struct TsStream {
    inner: TcpStream,
    /// Unix µs of the last segment read; 0 until the kernel gives one.
    last_rx_us: i64,
    timestamps: bool,
}

impl TsStream {
    /// Kernel time (unix µs) at which the last data read arrived, if known.
    pub fn last_rx_us(&self) -> Option<i64> {
        (self.last_rx_us > 0).then_some(self.last_rx_us)
    }
}

/// Source address `k` of `count` (127.0.0.2 onwards).
pub fn source_ip(k: u64, count: u32) -> Ipv4Addr {
    let n = 2 + (k % u64::from(count.clamp(1, 253))) as u8;
    Ipv4Addr::new(127, 0, 0, n)
}

/// Binds to `src` (any port), connects to `server`, and turns on receive
/// timestamps. `rcvbuf` > 0 sets a small receive buffer (slow clients).
pub async fn connect(server: SocketAddr, src: Ipv4Addr, rcvbuf: u32) -> io::Result<TsStream> {
    let socket = TcpSocket::new_v4()?;
    // Let connect() pick the port for the 4-tuple, not bind(): otherwise
    // every bound socket would hold a port of its source address for itself.
    #[cfg(target_os = "linux")]
    setsockopt_int(
        socket.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        1,
    );
    socket.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    if rcvbuf > 0 {
        socket.set_recv_buffer_size(rcvbuf)?;
    }
    // Before connect: data can arrive as soon as the connection is up.
    let timestamps = setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        1,
    );
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(TsStream {
        inner: stream,
        last_rx_us: 0,
        timestamps,
    })
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> bool {
    // SAFETY: a valid socket fd, and a pointer to an int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

/// The control message type of `SO_TIMESTAMPNS` (same value, per socket(7)).
const SCM_TIMESTAMPNS: i32 = libc::SO_TIMESTAMPNS;

/// `recvmsg` into `buf`; the byte count and the kernel timestamp (unix µs)
/// when one came with the data.
fn recv_with_ts(fd: i32, buf: &mut [u8]) -> io::Result<(usize, Option<i64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS (a timespec), 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: fd is an open socket; msg points at live buffers above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ts = None;
    // SAFETY: walking the control messages the kernel wrote into `control`,
    // bounded by msg_controllen, with the libc CMSG helpers.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ts = Some(t.tv_sec * 1_000_000 + t.tv_nsec / 1000);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, ts))
}

impl AsRawFd for TsStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

impl AsyncRead for TsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.timestamps {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let fd = this.inner.as_raw_fd();
            let dst = buf.initialize_unfilled();
            match this
                .inner
                .try_io(Interest::READABLE, || recv_with_ts(fd, dst))
            {
                Ok((n, ts)) => {
                    if let Some(ts) = ts {
                        this.last_rx_us = ts;
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn source_addresses_stay_in_range() {
        assert_eq!(source_ip(0, 253), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(252, 253), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(source_ip(253, 253), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(5, 1), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[tokio::test]
    async fn reads_carry_kernel_timestamps() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            // The kernel turns stamping on in deferred work after the first
            // socket asks for it: keep writing until the client has a stamp.
            for _ in 0..200 {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            peer
        });
        let mut c = connect(addr, Ipv4Addr::new(127, 0, 0, 7), 0).await.unwrap();
        let before = opswire::time::now_micros();
        let mut buf = [0u8; 16];
        while c.last_rx_us().is_none() {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server stopped writing before any stamp came");
            assert_eq!(buf[0], b'x');
        }
        let ts = c.last_rx_us().unwrap();
        assert!((ts - before).abs() < 5_000_000, "{ts} vs {before}");
        drop(c);
        let peer = server.await.unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::from([127, 0, 0, 7]));
    }
}
