//! Shutdown signalling (mini-redis shape): one trigger, many cheap listeners.

use std::future::Future;

use tokio::sync::watch;

/// Fires shutdown for every [`Shutdown`] made from it.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Listens for shutdown; clone freely.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// A listener that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `recv` stays pending.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// A listener that fires when `fut` completes (or when the trigger fires).
    pub fn from_future(
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> (ShutdownTrigger, Shutdown) {
        let (trigger, shutdown) = Shutdown::new();
        let t = trigger.clone();
        tokio::spawn(async move {
            fut.await;
            t.trigger();
        });
        (trigger, shutdown)
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown has been triggered (immediately if it already was).
    /// If every trigger is dropped without firing, never completes.
    pub async fn recv(&mut self) {
        if self.0.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
