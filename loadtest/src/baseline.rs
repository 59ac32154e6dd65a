//! The baseline: the cheapest useful axum server, so every figure can be read as a share of what the machine
//! and the generator allow.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::post;

/// Serves `POST /{*path}` → 200 until killed; prints `listening on http://ADDR` first.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route("/{*path}", post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
