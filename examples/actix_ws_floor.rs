//! The memory floor of an actix-web + actix-ws connection, for
//! `docs/benchmarks.md`: the smallest server in the style of the actix
//! examples' actor-less `actix-ws` chat (one task per connection reading
//! its message stream), holding idle connections. It sends each client a
//! `welcome` frame so `opswire-bench --idle` counts it as connected, and
//! answers `GET /api/v1/info`. Nothing else: no hub, no auth, no metrics.
//!
//! ```sh
//! cargo build --release --example actix_ws_floor
//! taskset -c 0 target/release/examples/actix_ws_floor 127.0.0.1:18095 &
//! taskset -c 1 target/release/opswire-bench --url ws://127.0.0.1:18095/ws -n 1000 --idle -d 5 --server-pid $!
//! ```

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

async fn ws(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(async move {
        if session
            .text(
                r#"{"type":"welcome","session":"floor","teams":["t0"],"server":"actix_ws_floor"}"#,
            )
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = stream.recv().await {
            if let actix_ws::Message::Ping(b) = msg {
                if session.pong(&b).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(response)
}

async fn info() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"server": "actix_ws_floor", "tick_ms": 1000}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18095".into());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    HttpServer::new(|| {
        App::new()
            .route("/ws", web::get().to(ws))
            .route("/api/v1/info", web::get().to(info))
    })
    .workers(workers)
    .max_connections(25_000)
    .backlog(4096)
    .bind(addr)?
    .run()
    .await
}
