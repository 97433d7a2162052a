struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    fn add<T: Into<u64>>(&mut self, amount: T) {
        self.0 += amount.into();
    }
}

fn main() {}
