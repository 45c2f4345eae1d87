//! Test seam, compiled only with the `internals` feature (this package's
//! integration tests, benches and fuzz targets turn it on; a release build
//! of unibusd has no trace of it). A test can hold the callout's answers
//! that admit one key: decided (the store read), signed and sealed, but
//! not yet published, until the test releases them.
//!
//! Why: revocation without a gap ([`crate::kick::sweep`]) rests on
//! connections whose decision was made before a revoke's write but which
//! reach their server only after the revoke's first CONNZ listing. Only a
//! held answer makes that ordering certain, so that a test can prove the
//! settling sweep closes such a connection instead of hoping a reconnect
//! loop happens to hit the window.
//!
//! Nothing is held unless a test calls [`hold_answers_for`]; keys are
//! random per test, so tests running side by side in one process never
//! hold each other's connects.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio::sync::{mpsc, watch};

/// One armed key: where to say "an answer is held", and the gate.
struct Gate {
    held: mpsc::UnboundedSender<()>,
    open: watch::Receiver<bool>,
}

static GATES: LazyLock<Mutex<HashMap<String, Gate>>> = LazyLock::new(Default::default);

fn gates() -> std::sync::MutexGuard<'static, HashMap<String, Gate>> {
    GATES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The test's side of a hold on one key's admitting answers. Dropping it
/// releases them too, so a failing test never leaves a connect hanging.
pub struct HeldAnswers {
    key: String,
    held: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

/// From now on, holds every answer that admits `key` (a connecting key:
/// the JWT `name`) until [`HeldAnswers::release`]. Denials are never held.
///
/// # Panics
/// When `key` is already held.
pub fn hold_answers_for(key: &str) -> HeldAnswers {
    let (held_tx, held) = mpsc::unbounded_channel();
    let (open, open_rx) = watch::channel(false);
    let armed = gates().insert(key.to_string(), Gate { held: held_tx, open: open_rx });
    assert!(armed.is_none(), "answers for {key} are already held");
    HeldAnswers { key: key.to_string(), held, open }
}

impl HeldAnswers {
    /// Waits until one more admitting answer for the key has been decided,
    /// signed and held; `false` when none came within `limit`.
    pub async fn next_held(&mut self, limit: std::time::Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.held.recv()).await, Ok(Some(())))
    }

    /// Publishes the held answers and lets later ones through.
    pub fn release(self) {}
}

impl Drop for HeldAnswers {
    fn drop(&mut self) {
        gates().remove(&self.key);
        let _ = self.open.send(true);
    }
}

/// Called with an answer that admits `key`, just before it is published:
/// returns at once unless a test holds that key.
pub(super) async fn before_publish(key: &str) {
    let gate = gates().get(key).map(|g| (g.held.clone(), g.open.clone()));
    let Some((held, mut open)) = gate else { return };
    let _ = held.send(());
    // An error means the test's side is gone: released as well.
    let _ = open.wait_for(|released| *released).await;
}
