//! The accept loop: HTTP/1.1 (or, for gRPC, HTTP/2) connections (hyper) over TCP, optionally TLS (rustls), with
//! the limits a server facing hostile clients needs.
//!
//! - **Header-read timeout** (`--web.read-header-timeout`, default 10s): a connection
//!   whose request head is not complete within it is closed — on a new connection and
//!   between requests of a kept-alive one (so it is also the idle timeout). The TLS
//!   handshake has the same bound. Bodies are not timed; their size is limited by
//!   `limits.max_body_bytes`.
//! - **Connection cap** (`--web.max-connections`, default 1024): at most this many
//!   connections are served at once, websocket streams included (the slot is held by
//!   the socket, so an upgraded connection keeps it). At the cap the loop stops
//!   accepting: new connections wait in the kernel's listen backlog until a slot frees
//!   (as Prometheus' `netutil.LimitListener`), and are neither refused nor closed.
//! - **Graceful shutdown**: when `shutdown` resolves the listening socket is closed, idle
//!   connections close, in-flight requests finish (their connections close after the
//!   response), for at most [`SHUTDOWN_GRACE`]; whatever is left is then dropped.
//! - With TLS, a client speaking plain HTTP to the port gets a 400 saying so (as Go's
//!   server answers) and the connection is closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

/// `--web.read-header-timeout` by default.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `--web.max-connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct ListenOptions {
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub read_header_timeout: Duration,
    pub max_connections: usize,
    /// Speak HTTP/2 only (gRPC) instead of HTTP/1.1.
    pub http2: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            tls: None,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2: false,
        }
    }
}

/// File descriptors kept free of connections: WAL segments, Parquet files being read or
/// written, the scrape clients' sockets, Alertmanager connections.
const RESERVED_FDS: usize = 128;

/// The connection cap, lowered when the process' open-file limit could not hold it (a
/// cap above the limit would let idle clients take every descriptor, and appends and
/// flushes would fail with "too many open files").
pub fn fit_to_fd_limit(max_connections: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<usize>().ok())
        });
    match soft {
        Some(soft) if max_connections + RESERVED_FDS > soft => {
            let fitted = soft.saturating_sub(RESERVED_FDS).max(16);
            warn!(
                max_connections,
                open_file_limit = soft,
                fitted,
                "--web.max-connections lowered to fit the open-file limit (raise it with ulimit -n)"
            );
            fitted
        }
        _ => max_connections,
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ListenOptions,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let http2 = options.http2;
    let tls = options.tls.map(|config| {
        if http2 {
            // gRPC clients insist on ALPN `h2`.
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        } else {
            TlsAcceptor::from(config)
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut at_cap_logged = false;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        if slots.available_permits() == 0 && !at_cap_logged {
            warn!(
                max_connections = options.max_connections,
                "connection limit reached; new connections wait to be accepted"
            );
            at_cap_logged = true;
        }
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_connection_error(&err) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        error!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        if slots.available_permits() > 0 {
            at_cap_logged = false;
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            permit,
            app.clone(),
            tls.clone(),
            Timing {
                header_timeout: options.read_header_timeout,
                http2,
            },
            stop_rx.clone(),
            peer,
        ));
    }
    drop(listener);
    info!(
        connections = connections.len(),
        "stopped accepting; draining connections"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.abort_all();
    }
}

/// Errors of one incoming connection (not of the listener): accept the next.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// How one connection is served: the header-read (and handshake) timeout and protocol.
#[derive(Clone, Copy)]
struct Timing {
    header_timeout: Duration,
    http2: bool,
}

async fn connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    app: Router,
    tls: Option<TlsAcceptor>,
    timing: Timing,
    stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    let header_timeout = timing.header_timeout;
    match tls {
        None => {
            http(
                Counted {
                    io: stream,
                    _permit: permit,
                },
                app,
                timing,
                stop,
            )
            .await
        }
        Some(acceptor) => {
            let mut stream = stream;
            // A TLS client starts with a handshake record (0x16); anything else is most
            // likely plain HTTP sent to the TLS port.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] != 0x16 => {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                    // Read what the client still sends (briefly) before closing, so the
                    // close is not a reset that destroys the answer in flight.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let mut sink = [0u8; 4096];
                        let mut total = 0;
                        while total < 65_536 {
                            match stream.read(&mut sink).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => total += n,
                            }
                        }
                    })
                    .await;
                    return;
                }
                Ok(Ok(1)) => {}
                _ => return,
            }
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    http(
                        Counted {
                            io: stream,
                            _permit: permit,
                        },
                        app,
                        timing,
                        stop,
                    )
                    .await
                }
                Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades, for websockets) or HTTP/2 on one connection until it
/// closes or `stop` asks for a graceful close.
async fn http<IO>(io: IO, app: Router, timing: Timing, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if timing.http2 {
        return http2(io, app, timing, stop).await;
    }
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timing.header_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(error = %err, "connection closed with an error");
    }
}

/// HTTP/2 (gRPC): streams per connection are bounded, and an idle connection is pinged
/// and closed when the peer stops answering.
async fn http2<IO>(io: IO, app: Router, timing: Timing, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(timing.header_timeout)
        .max_header_list_size(64 << 10);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(error = %err, "connection closed with an error");
    }
}

/// A connection's socket holding its slot under the connection cap: the slot is freed
/// when the socket is dropped, also after a websocket upgrade took it over.
struct Counted<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
