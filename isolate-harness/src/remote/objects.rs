//! The table of objects a child holds for its parent's [`Remote`]s.
//!
//! [`Remote`]: crate::Remote
//!
//! A handle names a slot and the generation of the slot's object: a slot
//! freed and filled again has a new generation, so a handle to an object
//! that is gone finds nothing rather than its successor. Freed slots are
//! reused first, so a child whose objects come and go keeps a table as
//! large as the most objects it held at once.

use std::any::Any;

use crate::ipc::Outgoing;

/// The objects of one child, by handle.
#[derive(Default)]
pub(crate) struct Objects {
    slots: Vec<Slot>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    /// The slot whose `Vec<u8>` is out in a reply being sent, to be put
    /// back by [`Objects::settle`].
    lent: Option<u32>,
}

struct Slot {
    generation: u32,
    state: State,
}

enum State {
    Free,
    Held(Box<dyn Any>),
    /// Its value is out in a reply being sent.
    Lent,
}

impl Objects {
    /// Keeps `object`, and returns its handle (never 0).
    pub(crate) fn insert(&mut self, object: Box<dyn Any>) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 objects")
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.state = State::Held(object);
        handle(index, slot.generation)
    }

    /// The object `handle` names, as a `T`.
    pub(crate) fn get_mut<T: 'static>(&mut self, handle: u64) -> Result<&mut T, String> {
        match &mut self.slot(handle)?.state {
            State::Held(object) => object.downcast_mut().ok_or_else(not_a::<T>),
            State::Lent | State::Free => Err(gone()),
        }
    }

    /// Takes the object `handle` names out of the table, freeing its slot.
    pub(crate) fn take<T: 'static>(&mut self, handle: u64) -> Result<Box<T>, String> {
        let index = self.index(handle)?;
        let slot = &mut self.slots[index as usize];
        if !matches!(&slot.state, State::Held(object) if object.is::<T>()) {
            return Err(match slot.state {
                State::Held(_) => not_a::<T>(),
                State::Lent | State::Free => gone(),
            });
        }
        let State::Held(object) = std::mem::replace(&mut slot.state, State::Free) else {
            unreachable!("checked above");
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        Ok(object.downcast().expect("checked above"))
    }

    /// Lends the `Vec<u8>` object `handle` names, for a reply to send as
    /// it is: [`Objects::settle`] puts it back once the reply is sent.
    pub(crate) fn lend_bytes(&mut self, handle: u64) -> Result<Vec<u8>, String> {
        let index = self.index(handle)?;
        let slot = &mut self.slots[index as usize];
        let bytes = match &mut slot.state {
            State::Held(object) => object
                .downcast_mut::<Vec<u8>>()
                .map(std::mem::take)
                .ok_or_else(not_a::<Vec<u8>>)?,
            State::Lent | State::Free => return Err(gone()),
        };
        slot.state = State::Lent;
        self.lent = Some(index);
        Ok(bytes)
    }

    /// Puts back what `reply` was lent, once it is sent (or will not be).
    pub(crate) fn settle(&mut self, reply: &mut Outgoing) {
        if let Some(index) = self.lent.take() {
            let bytes = reply.take_lent().unwrap_or_default();
            self.slots[index as usize].state = State::Held(Box::new(bytes));
        }
    }

    /// How many objects the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn slot(&mut self, handle: u64) -> Result<&mut Slot, String> {
        let index = self.index(handle)?;
        Ok(&mut self.slots[index as usize])
    }

    /// The slot of `handle`, if it names the object the slot holds now.
    fn index(&self, handle: u64) -> Result<u32, String> {
        let generation = (handle >> 32) as u32;
        let index = (handle as u32).checked_sub(1).ok_or_else(gone)?;
        match self.slots.get(index as usize) {
            Some(slot) if slot.generation == generation => Ok(index),
            _ => Err(gone()),
        }
    }
}

fn handle(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index + 1)
}

fn gone() -> String {
    "the child holds no such object (it was dropped or moved out)".to_owned()
}

fn not_a<T>() -> String {
    format!("the object is not a `{}`", std::any::type_name::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slots_are_reused_and_old_handles_find_nothing() {
        let mut objects = Objects::default();
        let first = objects.insert(Box::new(1_u32));
        let second = objects.insert(Box::new("two"));
        assert_eq!(*objects.get_mut::<u32>(first).unwrap(), 1);
        assert_eq!(*objects.take::<u32>(first).unwrap(), 1);
        let third = objects.insert(Box::new(3_u32));
        assert_ne!(third, first, "a reused slot has a new generation");
        assert!(
            objects
                .get_mut::<u32>(first)
                .unwrap_err()
                .contains("no such object")
        );
        assert_eq!(*objects.get_mut::<u32>(third).unwrap(), 3);
        assert_eq!(objects.slots.len(), 2);
        assert_eq!(*objects.get_mut::<&str>(second).unwrap(), "two");
    }

    #[test]
    fn a_table_of_objects_that_come_and_go_stays_small() {
        let mut objects = Objects::default();
        let kept = objects.insert(Box::new(0_u8));
        for round in 0..100_000_u32 {
            let handle = objects.insert(Box::new(round));
            assert_eq!(*objects.take::<u32>(handle).unwrap(), round);
        }
        assert_eq!(objects.len(), 1);
        assert_eq!(objects.slots.len(), 2);
        assert_eq!(*objects.get_mut::<u8>(kept).unwrap(), 0);
    }

    #[test]
    fn a_wrong_type_or_handle_is_an_error_and_leaves_the_object() {
        let mut objects = Objects::default();
        let handle = objects.insert(Box::new(7_i64));
        assert!(
            objects
                .get_mut::<u8>(handle)
                .unwrap_err()
                .contains("not a `u8`")
        );
        assert!(
            objects
                .take::<u8>(handle)
                .unwrap_err()
                .contains("not a `u8`")
        );
        assert!(objects.get_mut::<i64>(0).is_err());
        assert!(objects.get_mut::<i64>(handle + 1).is_err());
        assert_eq!(*objects.take::<i64>(handle).unwrap(), 7);
    }

    #[test]
    fn lent_bytes_come_back_when_settled() {
        let mut objects = Objects::default();
        let handle = objects.insert(Box::new(vec![1_u8, 2, 3]));
        let bytes = objects.lend_bytes(handle).unwrap();
        assert!(
            objects.get_mut::<Vec<u8>>(handle).is_err(),
            "out while lent"
        );
        let mut reply =
            crate::ipc::value_frames(crate::ipc::Kind::Returned, &[], bytes, Vec::new())
                .unwrap()
                .lend();
        reply.write_to(&mut Vec::new()).unwrap();
        objects.settle(&mut reply);
        assert_eq!(*objects.get_mut::<Vec<u8>>(handle).unwrap(), [1, 2, 3]);
    }
}
