//! WebSocket upgrades, taken out of actix-http's HTTP/1 dispatcher.
//!
//! actix-http hands every `Upgrade: websocket` request without a chunked
//! body (and every `CONNECT`) to the service built here, together with
//! the connection itself. The
//! service runs the request through the same actix-web [`App`] as every
//! other request (routing, middleware, the HTTP span, the `/ws` handler's
//! checks), marked with [`UpgradePath`]. When the answer is a `101` that
//! carries an [`Accepted`] connection, it writes the response head and
//! spawns the connection on the bare socket as a task of its own: the
//! dispatcher, its timers and its two 8 KiB buffers end there. (Such
//! tasks are not actix-server's connections: `Application` waits for them
//! itself on shutdown.) Any other answer (`401`, `503`,
//! `404` for another path) is written whole and the socket closed.
//!
//! [`App`]: actix_web::App

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;

use actix_codec::Framed;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, HttpMessage, Request, Response, StatusCode};
use actix_service::{fn_factory, fn_service, IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, ServiceResponse};
use bytes::BytesMut;
use futures_util::future::LocalBoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

use super::Accepted;

/// Marks a request that came through the upgrade path: only those can
/// become WebSocket connections.
#[derive(Clone, Copy, Debug)]
pub struct UpgradePath;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("websocket upgrade: {0}")]
    Io(#[from] io::Error),
    #[error("websocket upgrade: response body: {0}")]
    Body(String),
}

/// actix-http wants one, though nothing reaches the client by then.
impl From<UpgradeError> for Response<BoxBody> {
    fn from(_: UpgradeError) -> Self {
        Response::internal_server_error()
    }
}

/// The upgrade service factory for `HttpServiceBuilder::upgrade`: one
/// instance of the app (from `make_app`) per worker.
pub fn service<F, A, SF, B>(
    make_app: F,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = UpgradeError,
    InitError = (),
>
where
    F: Fn() -> A + 'static,
    A: IntoServiceFactory<SF, Request>,
    SF: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    SF::Service: 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let factory = make_app().into_factory();
        async move {
            let app = Rc::new(factory.new_service(AppConfig::default()).await?);
            Ok::<_, ()>(fn_service(
                move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                    // Boxed: inline, this future would sit in every HTTP
                    // connection's task, upgraded or not.
                    Box::pin(serve(app.clone(), req, framed))
                        as LocalBoxFuture<'static, Result<(), UpgradeError>>
                },
            ))
        }
    })
}

/// One upgrade request: the app answers it, then the socket becomes a
/// WebSocket connection or gets that answer and is closed.
fn serve<S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> impl Future<Output = Result<(), UpgradeError>>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    req.extensions_mut().insert(UpgradePath);
    async move {
        let mut res: Response<BoxBody> = match app.call(req).await {
            Ok(res) => Response::from(res).map_into_boxed_body(),
            Err(e) => e.error_response().into(),
        };
        drop(app);
        let accepted = res.extensions_mut().remove::<Accepted>();
        let parts = framed.into_parts();
        let (mut codec, mut io) = (parts.codec, parts.io);
        // The dispatcher hands over without flushing: answers to requests
        // pipelined ahead of this one may still be in its write buffer.
        let mut buf = parts.write_buf;
        let outcome = match accepted {
            Some(accepted) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let (head, _) = res.into_parts();
                codec.encode(Message::Item((head, BodySize::None)), &mut buf)?;
                match io.write_all(&buf).await {
                    Ok(()) => {
                        // Only what the client already sent moves on; the
                        // dispatcher's buffers are freed here.
                        let buffered = BytesMut::from(&parts.read_buf[..]);
                        drop((parts.read_buf, buf, codec));
                        // A task of its own, on this worker: the
                        // dispatcher's task (sized for any HTTP
                        // connection) ends here.
                        actix_web::rt::spawn(accepted.run(io, buffered));
                        Ok(())
                    }
                    Err(e) => Err(UpgradeError::Io(e)),
                }
            }
            _ => {
                drop(parts.read_buf);
                refuse(res, codec, buf, io).await
            }
        };
        // A client gone mid-answer is not the server's error: actix-http
        // would log it at ERROR.
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "websocket upgrade: client gone during the answer");
        }
        Ok(())
    }
}

/// Writes a whole non-`101` answer and closes the connection. A streaming
/// body (another route's, say `/sse`) is delimited by the close: after an
/// upgrade request the codec cannot chunk.
async fn refuse(
    res: Response<BoxBody>,
    mut codec: h1::Codec,
    mut buf: BytesMut,
    mut io: TcpStream,
) -> Result<(), UpgradeError> {
    let (mut head, body) = res.into_parts();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    if size == BodySize::Stream {
        head.head_mut().no_chunking(true);
    }
    codec.encode(Message::Item((head, size)), &mut buf)?;
    let mut body = pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|e| UpgradeError::Body(e.to_string()))?;
        codec.encode(Message::Chunk(Some(chunk)), &mut buf)?;
        io.write_all(&buf).await?;
        buf.clear();
    }
    codec.encode(Message::Chunk(None), &mut buf)?;
    io.write_all(&buf).await?;
    io.shutdown().await?;
    Ok(())
}
