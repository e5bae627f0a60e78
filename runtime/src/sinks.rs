//! Event sinks (worktree stub).
use std::sync::Arc;
use std::time::Duration;
use crate::event::{Event, EventSink};
use crate::metrics::Registry;
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SinksConfig { pub queue: usize }
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct SinkError;
impl SinkError { pub fn path(&self) -> &str { "sinks" } }
impl SinksConfig { pub fn validate(&self) -> Result<(), SinkError> { Ok(()) } }
pub struct Sinks { tx: tokio::sync::broadcast::Sender<Arc<Event>> }
impl Sinks {
    pub fn start(_c: &SinksConfig, _node: &str, _r: &Registry) -> Result<Sinks, SinkError> { Ok(Sinks { tx: tokio::sync::broadcast::channel(16).0 }) }
    pub fn subscribe(&self) -> (Vec<Arc<Event>>, tokio::sync::broadcast::Receiver<Arc<Event>>) { (vec![], self.tx.subscribe()) }
    pub fn stream_dropped(&self, _n: u64) {}
    pub async fn shutdown(self, _t: Duration) {}
}
impl EventSink for Sinks { fn emit(&self, e: Event) { println!("{}", e.to_text()); let _ = self.tx.send(Arc::new(e)); } }
