//! The bundled dashboard: static assets embedded in the binary.

use actix_web::{web, HttpResponse};

/// Registers `/` and the dashboard's assets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index));
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("web/index.html"))
}
