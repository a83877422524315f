//! Which job runs next: jobs on the same site run one after another in submission order,
//! jobs on different sites (and jobs on no site) run in parallel.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The pure bookkeeping, without waiting: a ready queue and one lane per ordering key. The
/// front of a lane is the job that is ready or running; the rest wait behind it.
#[derive(Debug, Default)]
pub struct Lanes {
    ready: VecDeque<i64>,
    lanes: HashMap<String, VecDeque<i64>>,
    keys: HashMap<i64, String>,
}

impl Lanes {
    pub fn push(&mut self, id: i64, key: Option<String>) {
        match key {
            None => self.ready.push_back(id),
            Some(k) => {
                self.keys.insert(id, k.clone());
                let lane = self.lanes.entry(k).or_default();
                lane.push_back(id);
                if lane.len() == 1 {
                    self.ready.push_back(id);
                }
            }
        }
    }

    pub fn pop(&mut self) -> Option<i64> {
        self.ready.pop_front()
    }

    /// Marks a job finished; the next job of its lane becomes ready.
    pub fn finish(&mut self, id: i64) -> Option<i64> {
        let key = self.keys.remove(&id)?;
        let k = key.as_str();
        let lane = self.lanes.get_mut(k)?;
        if lane.front() == Some(&id) {
            lane.pop_front();
        } else {
            lane.retain(|x| *x != id);
            return None;
        }
        let next = lane.front().copied();
        if lane.is_empty() {
            self.lanes.remove(k);
        }
        if let Some(n) = next {
            self.ready.push_back(n);
        }
        next
    }

    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.lanes.is_empty() && self.keys.is_empty()
    }
}

/// [`Lanes`] shared by the workers, who wait for work.
#[derive(Default)]
pub struct Scheduler {
    lanes: Mutex<Lanes>,
    notify: Notify,
}

impl Scheduler {
    pub fn push(&self, id: i64, key: Option<String>) {
        self.lock().push(id, key);
        self.notify.notify_one();
    }

    pub fn finish(&self, id: i64) {
        if self.lock().finish(id).is_some() {
            self.notify.notify_one();
        }
    }

    /// The next ready job; waits until one is.
    pub async fn next(&self) -> i64 {
        loop {
            if let Some(id) = self.lock().pop() {
                return id;
            }
            self.notify.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn same_site_in_order_other_sites_in_parallel() {
        let mut l = Lanes::default();
        l.push(1, k("a"));
        l.push(2, k("a"));
        l.push(3, k("b"));
        l.push(4, None);
        l.push(5, k("a"));
        assert_eq!(l.pop(), Some(1));
        assert_eq!(l.pop(), Some(3));
        assert_eq!(l.pop(), Some(4));
        assert_eq!(l.pop(), None, "2 waits behind 1");
        assert_eq!(l.finish(3), None);
        assert_eq!(l.finish(1), Some(2));
        assert_eq!(l.pop(), Some(2));
        assert_eq!(l.pop(), None);
        assert_eq!(l.finish(2), Some(5));
        assert_eq!(l.pop(), Some(5));
        l.finish(5);
        l.finish(4);
        assert!(l.is_idle());
    }

    #[tokio::test]
    async fn workers_wake_for_released_jobs() {
        let s = std::sync::Arc::new(Scheduler::default());
        s.push(1, k("a"));
        s.push(2, k("a"));
        assert_eq!(s.next().await, 1);
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.next().await });
        tokio::task::yield_now().await;
        s.finish(1);
        assert_eq!(waiter.await.unwrap(), 2);
    }
}
