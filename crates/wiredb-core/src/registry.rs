//! The rooms of a server by id: created on the first join, closed when the last peer leaves.
//!
//! Opening and closing may be delegated to hooks (Python, which calls the user's room factory
//! and runs the room's tasks); joins that arrive while a room opens or closes wait for it, so no
//! client is ever synced against a room that is not ready or is being torn down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::clip::Clipped;
use crate::room::{RoomCore, RoomLimits};

/// Called by the registry, never under its lock. Both must not block: they hand the work to
/// whoever runs rooms and return.
pub trait RoomHooks: Send + Sync + 'static {
    /// A room is needed: create it, then call `Registry::opened` or `Registry::open_failed`.
    fn open(&self, id: &str);
    /// The last peer left: stop the room, then call `Registry::closed`.
    fn close(&self, id: &str);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("room {id:?} could not be opened: {reason}")]
    OpenFailed { id: String, reason: String },
}

type Waiter = oneshot::Sender<Result<Lease, RegistryError>>;

enum Slot {
    Opening(Vec<Waiter>),
    Open { core: Arc<RoomCore>, peers: usize },
    Closing(Vec<Waiter>),
}

pub struct Registry {
    rooms: Mutex<HashMap<String, Slot>>,
    hooks: Option<Arc<dyn RoomHooks>>,
    limits: RoomLimits,
}

/// A peer's hold on an open room; dropping it lets the room close when it was the last one.
pub struct Lease {
    registry: Arc<Registry>,
    id: String,
    core: Arc<RoomCore>,
    kept_open: bool,
}

impl Lease {
    pub fn core(&self) -> &Arc<RoomCore> {
        &self.core
    }

    /// Gives the hold up without closing the room, even if it was the last: the room then
    /// stays open until a peer joins and leaves (a room asked for by id, before any client).
    pub fn keep_open(mut self) -> Arc<RoomCore> {
        self.kept_open = true;
        self.registry.unpin(&self.id, &self.core);
        self.core.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.kept_open {
            self.registry.release(&self.id, &self.core);
        }
    }
}

impl Registry {
    /// Without hooks, rooms are plain room cores created and dropped by the registry itself.
    pub fn new(hooks: Option<Arc<dyn RoomHooks>>, limits: RoomLimits) -> Arc<Self> {
        Arc::new(Registry {
            rooms: Mutex::new(HashMap::new()),
            hooks,
            limits,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the room `id` if it is open now, without waiting.
    pub fn try_acquire(self: &Arc<Self>, id: &str) -> Option<Lease> {
        match self.lock().get_mut(id) {
            Some(Slot::Open { core, peers }) => {
                *peers += 1;
                Some(self.lease(id, core.clone()))
            }
            _ => None,
        }
    }

    /// Joins the room `id`, waiting while it opens or closes.
    pub async fn acquire(self: &Arc<Self>, id: &str) -> Result<Lease, RegistryError> {
        let receiver = {
            let mut rooms = self.lock();
            match rooms.get_mut(id) {
                Some(Slot::Open { core, peers }) => {
                    *peers += 1;
                    return Ok(self.lease(id, core.clone()));
                }
                Some(Slot::Opening(waiters)) | Some(Slot::Closing(waiters)) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    rx
                }
                None => match &self.hooks {
                    None => {
                        let core = RoomCore::new(id, self.limits);
                        rooms.insert(
                            id.to_owned(),
                            Slot::Open {
                                core: core.clone(),
                                peers: 1,
                            },
                        );
                        return Ok(self.lease(id, core));
                    }
                    Some(hooks) => {
                        let (tx, rx) = oneshot::channel();
                        rooms.insert(id.to_owned(), Slot::Opening(vec![tx]));
                        let hooks = hooks.clone();
                        drop(rooms);
                        hooks.open(id);
                        rx
                    }
                },
            }
        };
        receiver.await.unwrap_or_else(|_| {
            Err(RegistryError::OpenFailed {
                id: id.to_owned(),
                reason: "the server stopped".into(),
            })
        })
    }

    fn lease(self: &Arc<Self>, id: &str, core: Arc<RoomCore>) -> Lease {
        Lease {
            registry: self.clone(),
            id: id.to_owned(),
            core,
            kept_open: false,
        }
    }

    /// The hooks opened the room `id`: every waiting joiner gets it.
    pub fn opened(self: &Arc<Self>, id: &str, core: Arc<RoomCore>) {
        core.set_limits(self.limits);
        let mut unclaimed = Vec::new();
        {
            let mut rooms = self.lock();
            let Some(Slot::Opening(waiters)) = rooms.remove(id) else {
                tracing::warn!(room = %Clipped(id), "opened a room that nobody was waiting for");
                return;
            };
            rooms.insert(
                id.to_owned(),
                Slot::Open {
                    core: core.clone(),
                    peers: waiters.len(),
                },
            );
            for waiter in waiters {
                if let Err(Ok(lease)) = waiter.send(Ok(self.lease(id, core.clone()))) {
                    unclaimed.push(lease);
                }
            }
        }
        // Dropped outside the lock: a joiner that gave up releases its place.
        drop(unclaimed);
    }

    pub fn open_failed(&self, id: &str, reason: &str) {
        let waiters = match self.lock().remove(id) {
            Some(Slot::Opening(waiters)) => waiters,
            _ => return,
        };
        for waiter in waiters {
            let _ = waiter.send(Err(RegistryError::OpenFailed {
                id: id.to_owned(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// The hooks closed the room; joiners that came meanwhile get a fresh one.
    pub fn closed(&self, id: &str) {
        let mut rooms = self.lock();
        match rooms.remove(id) {
            Some(Slot::Closing(waiters)) if !waiters.is_empty() => {
                rooms.insert(id.to_owned(), Slot::Opening(waiters));
                drop(rooms);
                if let Some(hooks) = &self.hooks {
                    hooks.open(id);
                }
            }
            Some(Slot::Closing(_)) | None => {}
            Some(other) => {
                rooms.insert(id.to_owned(), other);
            }
        }
    }

    /// The room `id` failed (its hooks' side raised): it is forgotten at once, so the next
    /// join opens a fresh room, while the leases of the failed one run out (they count for
    /// nothing now). Returns false if `core` was not the open room `id` (it was closing
    /// already: the hooks finish that close as usual).
    pub fn failed(&self, id: &str, core: &Arc<RoomCore>) -> bool {
        let mut rooms = self.lock();
        match rooms.get(id) {
            Some(Slot::Open { core: open, .. }) if Arc::ptr_eq(open, core) => {
                rooms.remove(id);
                true
            }
            _ => false,
        }
    }

    /// A lease of `core` ended. Only the room it was taken on counts: a failed room's leases
    /// may outlive it, next to a fresh room of the same id.
    fn release(&self, id: &str, core: &Arc<RoomCore>) {
        let mut rooms = self.lock();
        let Some(Slot::Open { peers, core: open }) = rooms.get_mut(id) else {
            return;
        };
        if !Arc::ptr_eq(open, core) {
            return;
        }
        *peers -= 1;
        if *peers > 0 {
            return;
        }
        match &self.hooks {
            None => {
                rooms.remove(id);
            }
            Some(hooks) => {
                rooms.insert(id.to_owned(), Slot::Closing(Vec::new()));
                let hooks = hooks.clone();
                drop(rooms);
                hooks.close(id);
            }
        }
    }

    fn unpin(&self, id: &str, core: &Arc<RoomCore>) {
        if let Some(Slot::Open { peers, core: open }) = self.lock().get_mut(id) {
            if Arc::ptr_eq(open, core) {
                *peers = peers.saturating_sub(1);
            }
        }
    }

    /// The limits every room of this registry gets.
    pub fn limits(&self) -> RoomLimits {
        self.limits
    }

    /// Ids of the rooms that are open now.
    pub fn open_rooms(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Open { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Fails every join still waiting (the server is stopping).
    pub fn fail_waiters(&self) {
        let mut rooms = self.lock();
        for slot in rooms.values_mut() {
            if let Slot::Opening(waiters) | Slot::Closing(waiters) = slot {
                waiters.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Recorder {
        calls: StdMutex<Vec<String>>,
    }

    impl RoomHooks for Recorder {
        fn open(&self, id: &str) {
            self.calls.lock().unwrap().push(format!("open {id}"));
        }
        fn close(&self, id: &str) {
            self.calls.lock().unwrap().push(format!("close {id}"));
        }
    }

    #[tokio::test]
    async fn plain_rooms_are_created_on_join_and_dropped_when_empty() {
        let registry = Registry::new(None, RoomLimits::default());
        let a = registry.acquire("x").await.unwrap();
        let b = registry.acquire("x").await.unwrap();
        assert!(Arc::ptr_eq(a.core(), b.core()));
        drop(a);
        assert_eq!(registry.open_rooms(), vec!["x".to_string()]);
        drop(b);
        assert!(registry.open_rooms().is_empty());
    }

    #[tokio::test]
    async fn joins_wait_for_the_hooks_to_open_the_room() {
        let hooks = Arc::new(Recorder::default());
        let registry = Registry::new(Some(hooks.clone()), RoomLimits::default());
        let r2 = registry.clone();
        let join = tokio::spawn(async move { r2.acquire("x").await.map(|l| l.core().clone()) });
        tokio::task::yield_now().await;
        assert!(!join.is_finished());
        assert_eq!(*hooks.calls.lock().unwrap(), vec!["open x"]);
        registry.opened("x", RoomCore::new("x", RoomLimits::default()));
        assert_eq!(join.await.unwrap().unwrap().id(), "x");
        // The lease was dropped by the task: the room is closing.
        assert_eq!(*hooks.calls.lock().unwrap(), vec!["open x", "close x"]);
    }

    #[tokio::test]
    async fn a_join_during_close_reopens_after_it() {
        let hooks = Arc::new(Recorder::default());
        let registry = Registry::new(Some(hooks.clone()), RoomLimits::default());
        let r2 = registry.clone();
        let first = tokio::spawn(async move { r2.acquire("x").await.map(drop) });
        tokio::task::yield_now().await;
        registry.opened("x", RoomCore::new("x", RoomLimits::default()));
        first.await.unwrap().unwrap();
        let r3 = registry.clone();
        let second = tokio::spawn(async move { r3.acquire("x").await.map(|l| l.core().clone()) });
        tokio::task::yield_now().await;
        registry.closed("x");
        assert_eq!(
            *hooks.calls.lock().unwrap(),
            vec!["open x", "close x", "open x"]
        );
        let fresh = RoomCore::new("x", RoomLimits::default());
        registry.opened("x", fresh.clone());
        assert!(Arc::ptr_eq(&second.await.unwrap().unwrap(), &fresh));
    }

    #[tokio::test]
    async fn a_room_kept_open_closes_after_its_first_peer_leaves() {
        let hooks = Arc::new(Recorder::default());
        let registry = Registry::new(Some(hooks.clone()), RoomLimits::default());
        let r2 = registry.clone();
        let asked = tokio::spawn(async move { r2.acquire("x").await.map(Lease::keep_open) });
        tokio::task::yield_now().await;
        let core = RoomCore::new("x", RoomLimits::default());
        registry.opened("x", core.clone());
        assert!(Arc::ptr_eq(&asked.await.unwrap().unwrap(), &core));
        assert_eq!(registry.open_rooms(), vec!["x".to_string()]);
        assert_eq!(*hooks.calls.lock().unwrap(), vec!["open x"]);

        let peer = registry.try_acquire("x").expect("the room is open");
        assert!(Arc::ptr_eq(peer.core(), &core));
        drop(peer);
        assert_eq!(*hooks.calls.lock().unwrap(), vec!["open x", "close x"]);
        assert!(registry.try_acquire("x").is_none());
    }

    #[tokio::test]
    async fn a_failed_room_is_forgotten_and_its_leases_never_touch_the_fresh_one() {
        let hooks = Arc::new(Recorder::default());
        let registry = Registry::new(Some(hooks.clone()), RoomLimits::default());
        let r2 = registry.clone();
        let join = tokio::spawn(async move { r2.acquire("x").await });
        tokio::task::yield_now().await;
        let failed = RoomCore::new("x", RoomLimits::default());
        registry.opened("x", failed.clone());
        let stale = join.await.unwrap().unwrap();
        assert!(registry.failed("x", &failed));
        assert!(!registry.failed("x", &failed));
        assert!(registry.open_rooms().is_empty());

        let r3 = registry.clone();
        let join = tokio::spawn(async move { r3.acquire("x").await });
        tokio::task::yield_now().await;
        let fresh = RoomCore::new("x", RoomLimits::default());
        registry.opened("x", fresh.clone());
        let lease = join.await.unwrap().unwrap();
        assert!(Arc::ptr_eq(lease.core(), &fresh));
        // The failed room's last lease ends: the fresh room stays open, with its one peer.
        drop(stale);
        assert_eq!(registry.open_rooms(), vec!["x".to_string()]);
        assert_eq!(*hooks.calls.lock().unwrap(), vec!["open x", "open x"]);
        drop(lease);
        assert_eq!(
            *hooks.calls.lock().unwrap(),
            vec!["open x", "open x", "close x"]
        );
    }

    #[tokio::test]
    async fn open_failures_reach_the_joiners() {
        let registry = Registry::new(Some(Arc::new(Recorder::default())), RoomLimits::default());
        let r2 = registry.clone();
        let join = tokio::spawn(async move { r2.acquire("x").await.map(drop) });
        tokio::task::yield_now().await;
        registry.open_failed("x", "boom");
        assert!(join.await.unwrap().is_err());
    }
}
