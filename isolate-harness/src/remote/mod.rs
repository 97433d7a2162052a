//! Remote objects: values that live in an isolate's child, used from the
//! parent through handles ([`Remote`]), and the pool of isolates
//! ([`IsolatePool`]).
//!
//! A [`Remote<T>`] names an object in the child's table of objects: its
//! slot there, and the child it lives in. Every operation on it is one call
//! of the isolate, whose trampoline (see [`crate::server`]) finds the
//! object in the table and calls the function on it there; only the
//! arguments and results that the caller asks back cross the boundary.
//! So the object itself needs neither serde nor `Send`: it never leaves
//! the child unless [`Remote::fetch`] or [`Remote::into_inner`] asks for
//! it.

mod objects;
mod pool;

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use crate::ipc::{FrameBuilder, Kind, Outgoing};
use crate::isolate::{Argument, Error, Isolate};
use crate::server::{self, CallRequest, answer, catch, reply_frame};

pub(crate) use objects::Objects;
pub use pool::IsolatePool;

/// An object that lives in an [`Isolate`]'s child: the Rust form of the
/// Python library's proxies.
///
/// ```
/// use isolate_harness::{Error, Isolate};
///
/// struct Counter {
///     count: u64,
/// }
///
/// let isolate = Isolate::fork()?;
/// let counter = isolate.spawn(|start| Counter { count: start }, 40)?;
/// counter.call(|counter, by: u64| counter.count += by, 2)?;
/// assert_eq!(counter.call(|counter, ()| counter.count, ())?, 42);
/// # Ok::<(), Error>(())
/// ```
///
/// [`Isolate::spawn`] builds the object in the child, and each call runs a
/// function on it there: arguments and results cross as serde values (a
/// `Vec<u8>` as its bytes), the object stays. A result that cannot or
/// should not be copied stays in the child too, as another `Remote`
/// ([`Remote::call_remote`]). [`#[remote]`](crate::remote) on an `impl`
/// block makes a typed proxy whose methods do this.
///
/// Dropping a `Remote` drops the object in the child, where its `Drop`
/// runs (this waits for the child, like a call). A `Remote` holds its
/// isolate: the child lives as long as the isolate or any of its remote
/// objects. It is `Send` and `Sync` whatever `T` is, since `T` stays in
/// the child; calls from several threads take turns.
///
/// # When the child ends
///
/// A call that kills the child returns how ([`Error::Terminated`], ...);
/// from then on every call of the isolate, on any of its remote objects,
/// returns that first error as [`Error::Dead`]. [`Isolate::restart`] forks
/// a fresh child, without the objects: a `Remote` of the old child then
/// returns [`Error::Stale`], never another object.
pub struct Remote<T: 'static> {
    isolate: Isolate,
    /// The number of the child the object lives in.
    life: u64,
    /// Its handle in that child's table; `None` once moved out.
    handle: Option<u64>,
    object: PhantomData<fn() -> T>,
}

impl<T: 'static> Remote<T> {
    /// Runs `f` on the object, in the child, and returns its result.
    ///
    /// # Errors
    ///
    /// As [`Isolate::call`]; [`Error::Stale`] after a restart.
    pub fn call<A: Argument, R: Serialize + DeserializeOwned + 'static>(
        &self,
        f: fn(&mut T, A) -> R,
        arg: A,
    ) -> Result<R, Error> {
        self.request(call_trampoline::<T, A, R>, f as usize, arg)
    }

    /// Runs `f` on the object, in the child, and leaves its result there:
    /// a handle to it comes back.
    ///
    /// # Errors
    ///
    /// As [`Remote::call`].
    pub fn call_remote<A: Argument, U: 'static>(
        &self,
        f: fn(&mut T, A) -> U,
        arg: A,
    ) -> Result<Remote<U>, Error> {
        let handle = self.request(call_remote_trampoline::<T, A, U>, f as usize, arg)?;
        Ok(Remote::new(self.isolate.share(), self.life, handle))
    }

    /// Moves the object into `f`, in the child, and returns its result:
    /// for a method that takes `self`. The object is gone from the child,
    /// even if `f` panics.
    ///
    /// # Errors
    ///
    /// As [`Remote::call`].
    pub fn call_once<A: Argument, R: Serialize + DeserializeOwned + 'static>(
        mut self,
        f: fn(T, A) -> R,
        arg: A,
    ) -> Result<R, Error> {
        let result = self.request(call_once_trampoline::<T, A, R>, f as usize, arg);
        self.handle = None;
        result
    }

    /// A copy of the object, the object staying in the child (the Python
    /// library's `byvalue`). A `Vec<u8>` comes as its bytes, sent from
    /// where it lies.
    ///
    /// # Errors
    ///
    /// As [`Remote::call`].
    pub fn fetch(&self) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
    {
        self.request(fetch_trampoline::<T>, 0, ())
    }

    /// Moves the object out of the child.
    ///
    /// # Errors
    ///
    /// As [`Remote::call`].
    pub fn into_inner(self) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
    {
        self.call_once(|object, ()| object, ())
    }

    /// The isolate whose child holds the object.
    pub fn isolate(&self) -> &Isolate {
        &self.isolate
    }

    pub(crate) fn new(isolate: Isolate, life: u64, handle: u64) -> Remote<T> {
        Remote {
            isolate,
            life,
            handle: Some(handle),
            object: PhantomData,
        }
    }

    /// One call on the object.
    fn request<A: Serialize + 'static, R: DeserializeOwned + 'static>(
        &self,
        trampoline: server::Trampoline,
        function: usize,
        arg: A,
    ) -> Result<R, Error> {
        let handle = self.handle.expect("a Remote in use holds its object");
        let life = (self.life, std::any::type_name::<T>());
        self.isolate
            .request(Some(life), trampoline, function, handle, arg)
            .map(|(result, _)| result)
    }
}

impl<T: 'static> Drop for Remote<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle {
            // A child that is gone took the object with it; one that dies
            // of its `Drop` is found dead by the next call.
            let life = (self.life, std::any::type_name::<T>());
            let _: Result<((), u64), Error> =
                self.isolate
                    .request(Some(life), drop_trampoline::<T>, 0, handle, ());
        }
    }
}

impl<T: 'static> fmt::Debug for Remote<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("type", &std::any::type_name::<T>())
            .field("handle", &self.handle)
            .field("isolate", &self.isolate)
            .finish()
    }
}

impl Isolate {
    /// Builds an object in the child, as `init(arg)`, and returns a
    /// handle to it: see [`Remote`]. The object needs no serde and need
    /// not be `Send`: it stays in the child.
    ///
    /// # Errors
    ///
    /// As [`Isolate::call`]: [`Error::Panicked`] when `init` panics.
    pub fn spawn<A: Argument, T: 'static>(
        &self,
        init: fn(A) -> T,
        arg: A,
    ) -> Result<Remote<T>, Error> {
        let (handle, life) = self.request(None, spawn_trampoline::<A, T>, init as usize, 0, arg)?;
        Ok(Remote::new(self.share(), life, handle))
    }
}

/// Reinterprets the function address a call carries.
///
/// # Safety
///
/// `address` must be that of a function of type `F` (a `fn` pointer type),
/// sent by the parent with the trampoline monomorphized for it.
unsafe fn function<F: Copy>(address: usize) -> F {
    debug_assert_eq!(size_of::<F>(), size_of::<usize>());
    // SAFETY: by the caller's contract `address` is an `F`, a function
    // pointer, which has the size and representation of a `usize`; the
    // child is a fork of the parent's image, so it names the same code.
    unsafe { std::mem::transmute_copy(&address) }
}

fn spawn_trampoline<A: DeserializeOwned + 'static, T: 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    bytes: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let argument: A = request.argument(bytes)?;
        // SAFETY: the parent sent `init` with this trampoline, for this `A`
        // and `T` (`Isolate::spawn`).
        let init: fn(A) -> T = unsafe { function(request.function) };
        let outcome = catch(|| init(argument)).map(|object| objects.insert(Box::new(object)));
        Ok(reply_frame(outcome, Vec::new(), request.call))
    })
}

fn call_trampoline<T: 'static, A: DeserializeOwned + 'static, R: Serialize + 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    bytes: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let argument: A = request.argument(bytes)?;
        let object = object::<T>(objects, &request)?;
        // SAFETY: the parent sent `f` with this trampoline, for these types
        // (`Remote::call`).
        let f: fn(&mut T, A) -> R = unsafe { function(request.function) };
        Ok(reply_frame(
            catch(|| f(object, argument)),
            Vec::new(),
            request.call,
        ))
    })
}

fn call_remote_trampoline<T: 'static, A: DeserializeOwned + 'static, U: 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    bytes: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let argument: A = request.argument(bytes)?;
        let object = object::<T>(objects, &request)?;
        // SAFETY: the parent sent `f` with this trampoline, for these types
        // (`Remote::call_remote`).
        let f: fn(&mut T, A) -> U = unsafe { function(request.function) };
        let outcome = catch(|| f(object, argument)).map(|result| objects.insert(Box::new(result)));
        Ok(reply_frame(outcome, Vec::new(), request.call))
    })
}

fn call_once_trampoline<T: 'static, A: DeserializeOwned + 'static, R: Serialize + 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    bytes: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let argument: A = request.argument(bytes)?;
        let object = objects
            .take::<T>(request.object)
            .map_err(|reason| request.failed(&reason))?;
        // SAFETY: the parent sent `f` with this trampoline, for these types
        // (`Remote::call_once`).
        let f: fn(T, A) -> R = unsafe { function(request.function) };
        Ok(reply_frame(
            catch(|| f(*object, argument)),
            Vec::new(),
            request.call,
        ))
    })
}

fn fetch_trampoline<T: Serialize + 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    _: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
            // A frame's length is a `u32`: a larger vector is refused
            // before it is lent, so that it stays whole.
            if u32::try_from(object::<Vec<u8>>(objects, &request)?.len() + 1).is_err() {
                return Err(request.failed("the object is too large for a frame"));
            }
            let bytes = objects
                .lend_bytes(request.object)
                .map_err(|reason| request.failed(&reason))?;
            return Ok(reply_frame(Ok(bytes), Vec::new(), request.call).lend());
        }
        let object = object::<T>(objects, &request)?;
        let encoded = catch(|| {
            FrameBuilder::new(Kind::Returned)
                .push(&request.call.to_le_bytes())
                .encode(&*object)
                .map(FrameBuilder::finish)
        });
        Ok(match encoded {
            Ok(Ok(frame)) => Outgoing::frames(frame),
            Ok(Err(error)) => request.failed(&format!("could not encode the object: {error}")),
            Err(panic) => reply_frame::<()>(Err(panic), Vec::new(), request.call),
        })
    })
}

fn drop_trampoline<T: 'static>(
    objects: &mut Objects,
    request: CallRequest<'_>,
    _: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let object = objects
            .take::<T>(request.object)
            .map_err(|reason| request.failed(&reason))?;
        Ok(reply_frame(
            catch(|| drop(object)),
            Vec::new(),
            request.call,
        ))
    })
}

/// The object a call is made on, as a `T`; else the reply that says why
/// there is none.
fn object<'o, T: 'static>(
    objects: &'o mut Objects,
    request: &CallRequest<'_>,
) -> Result<&'o mut T, Outgoing> {
    objects
        .get_mut::<T>(request.object)
        .map_err(|reason| request.failed(&reason))
}
