//! HTTP (worktree stub).
use std::sync::Arc;
use crate::event::Event;
use crate::metrics::Registry;
pub trait DaemonState: Send + Sync + 'static {
    fn status(&self) -> serde_json::Value;
    fn ready(&self) -> Result<(), String>;
    fn before_scrape(&self) {}
    fn subscribe(&self) -> (Vec<Arc<Event>>, tokio::sync::broadcast::Receiver<Arc<Event>>);
    fn stream_lagged(&self, n: u64);
}
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct HttpError;
pub async fn serve(_l: tokio::net::TcpListener, _r: Arc<Registry>, _s: Arc<dyn DaemonState>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), HttpError> { shutdown.await; Ok(()) }
