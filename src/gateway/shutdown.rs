//! The shutdown request `uacreg.shutdown` makes: the daemon's run loop waits on it beside the
//! signals.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A one-shot request to shut down gracefully, as SIGTERM does.
#[derive(Debug, Default)]
pub struct ShutdownSignal {
    notify: Notify,
    /// `uacregctl shutdown --unregister`: un-REGISTER every binding even where the daemon
    /// would not (`unregister_on_shutdown = false`, or a cluster node handing over).
    unregister: AtomicBool,
}

impl ShutdownSignal {
    /// Asks for the shutdown; a request made before anyone waits is kept.
    pub fn request(&self) {
        self.notify.notify_one();
    }

    /// Asks for the shutdown with every binding un-REGISTERed.
    pub fn request_unregister(&self) {
        self.unregister.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether the shutdown asked for un-REGISTERs.
    pub fn wants_unregister(&self) -> bool {
        self.unregister.load(Ordering::SeqCst)
    }

    /// Completes once a shutdown was requested.
    pub async fn requested(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_made_before_the_wait_is_kept() {
        let signal = ShutdownSignal::default();
        let waiting = tokio::time::timeout(Duration::from_millis(50), signal.requested()).await;
        assert!(waiting.is_err(), "nothing was requested yet");
        signal.request();
        tokio::time::timeout(Duration::from_secs(5), signal.requested())
            .await
            .expect("the earlier request completes the wait");
    }
}
