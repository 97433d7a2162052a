//! What is left to the compiler: a result that is not serde.

use std::rc::Rc;

#[isolate_harness::isolated]
fn shared(value: u64) -> Rc<u64> {
    Rc::new(value)
}

fn main() {}
