struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    fn drain_into(&mut self, total: &mut u64) {
        *total += self.0;
        self.0 = 0;
    }
}

fn main() {}
