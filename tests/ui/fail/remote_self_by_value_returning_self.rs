struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    fn doubled(self) -> Self {
        Tally(self.0 * 2)
    }
}

fn main() {}
