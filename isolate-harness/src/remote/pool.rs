//! [`IsolatePool`]: several isolates, each call made by an idle one.

use std::sync::{Condvar, Mutex, PoisonError};

use serde::{Serialize, de::DeserializeOwned};

use crate::isolate::{Argument, Error, Isolate, IsolateBuilder};

/// A pool of isolates: each call goes to an idle child, so that calls from
/// several threads run at once, one per child; a child that a call ended
/// (a crash, an exit, a timeout), or that died while idle, is replaced by
/// a fresh one before its next call.
///
/// ```
/// use isolate_harness::IsolatePool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = IsolatePool::new(2)?;
/// let pool = &pool;
/// let squares = std::thread::scope(|scope| {
///     let calls: Vec<_> = (0..4)
///         .map(|x| scope.spawn(move || pool.call(square, x)))
///         .collect();
///     calls
///         .into_iter()
///         .map(|call| call.join().unwrap())
///         .collect::<Result<Vec<u64>, _>>()
/// })?;
/// assert_eq!(squares, [0, 1, 4, 9]);
/// # Ok::<(), isolate_harness::Error>(())
/// ```
///
/// A pool serves plain calls; an object that must stay in one child is
/// spawned on an [`Isolate`] ([`Isolate::spawn`]).
pub struct IsolatePool {
    members: Vec<Isolate>,
    /// The members no call has now, by index.
    idle: Mutex<Vec<usize>>,
    /// Signalled when a member becomes idle.
    freed: Condvar,
}

impl IsolatePool {
    /// Forks a pool of `size` children with the default options (at least
    /// one).
    ///
    /// # Errors
    ///
    /// As [`Isolate::fork`].
    pub fn new(size: usize) -> Result<IsolatePool, Error> {
        Isolate::builder().pool(size)
    }

    pub(crate) fn with_builder(builder: IsolateBuilder, size: usize) -> Result<IsolatePool, Error> {
        let members = (0..size.max(1))
            .map(|_| builder.clone().fork())
            .collect::<Result<Vec<_>, _>>()?;
        let idle = (0..members.len()).rev().collect();
        Ok(IsolatePool {
            members,
            idle: Mutex::new(idle),
            freed: Condvar::new(),
        })
    }

    /// Calls `f(arg)` in an idle child, waiting for one if all are busy.
    ///
    /// # Errors
    ///
    /// As [`Isolate::call`]. The child a call ended is replaced before it
    /// makes another; if it cannot be, that call returns why.
    pub fn call<A: Argument, R: Serialize + DeserializeOwned + 'static>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<R, Error> {
        // Before the pool's lock, which may be held forever in a copy.
        self.members[0].check_owner()?;
        let lease = self.lease();
        let isolate = &self.members[lease.index];
        // A child that a call ended, or that died while idle (killed from
        // outside, say), is replaced before this call.
        if !isolate.is_alive() {
            isolate.restart()?;
        }
        isolate.call(f, arg)
    }

    /// How many children the pool has.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The process ids of the children that serve calls now.
    pub fn ids(&self) -> Vec<u32> {
        self.members.iter().filter_map(Isolate::id).collect()
    }

    /// An idle member, waited for if there is none; it is idle again when
    /// the lease is dropped.
    fn lease(&self) -> Lease<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(index) = idle.pop() {
                return Lease { pool: self, index };
            }
            idle = self
                .freed
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A member taken for one call: given back when dropped, even if encoding
/// the argument panics.
struct Lease<'a> {
    pool: &'a IsolatePool,
    index: usize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
        self.pool.freed.notify_one();
    }
}

impl std::fmt::Debug for IsolatePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolatePool")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}
