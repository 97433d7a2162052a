//! What is left to the compiler: a result that is not serde.

use std::rc::Rc;

struct Tally(Rc<u64>);

#[isolate_harness::remote]
impl Tally {
    fn shared(&self) -> Rc<u64> {
        Rc::clone(&self.0)
    }
}

fn main() {}
