struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    fn total(self: Box<Self>) -> u64 {
        self.0
    }
}

fn main() {}
