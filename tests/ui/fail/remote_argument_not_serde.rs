//! What is left to the compiler: an argument that is not serde.

use std::rc::Rc;

struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    fn add(&mut self, amount: Rc<u64>, times: u64) {
        self.0 += *amount * times;
    }
}

fn main() {}
