struct Tally<T>(T);

#[isolate_harness::remote]
impl<T: Copy> Tally<T> {
    fn get(&self) -> T {
        self.0
    }
}

fn main() {}
