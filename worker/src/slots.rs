//! Host identities for concurrently running steps: each running step gets its own unprivileged
//! host uid and gid from a configured range, so two steps never share a host identity.

use std::sync::{Condvar, Mutex};

/// A range of unprivileged host ids (uid = gid), one per concurrently running step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

impl Default for IdRange {
    /// 64 ids from 1000000: above any login user's, below Debian's subordinate-id ranges'
    /// usual reach, and owning nothing on the host.
    fn default() -> Self {
        Self {
            first: 1_000_000,
            count: 64,
        }
    }
}

/// The free ids of an [`IdRange`].
#[derive(Debug)]
pub(crate) struct SlotPool {
    free: Mutex<Vec<u32>>,
    returned: Condvar,
}

/// A host id held for the duration of one step; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct Slot<'p> {
    pool: &'p SlotPool,
    pub(crate) host_id: u32,
}

impl SlotPool {
    pub(crate) fn new(range: IdRange) -> Self {
        let free = (0..range.count).rev().map(|i| range.first + i).collect();
        Self {
            free: Mutex::new(free),
            returned: Condvar::new(),
        }
    }

    /// Takes a free id, waiting for one if every id is in use.
    pub(crate) fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().expect("slot pool lock is never poisoned");
        loop {
            if let Some(host_id) = free.pop() {
                return Slot {
                    pool: self,
                    host_id,
                };
            }
            free = self
                .returned
                .wait(free)
                .expect("slot pool lock is never poisoned");
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .pool
            .free
            .lock()
            .expect("slot pool lock is never poisoned");
        free.push(self.host_id);
        self.pool.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_slots_get_distinct_ids_and_ids_come_back() {
        let pool = SlotPool::new(IdRange {
            first: 10,
            count: 2,
        });
        let a = pool.acquire();
        let b = pool.acquire();
        assert_ne!(a.host_id, b.host_id);
        let a_id = a.host_id;
        drop(a);
        assert_eq!(pool.acquire().host_id, a_id);
    }

    #[test]
    fn acquire_waits_for_a_returned_id() {
        let pool = std::sync::Arc::new(SlotPool::new(IdRange { first: 7, count: 1 }));
        let held = pool.acquire();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.acquire().host_id)
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the second acquire must wait");
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
    }
}
