//! A proxy cannot be more public than its type: `Deref` names it.

mod tally {
    struct Tally(u64);

    #[isolate_harness::remote(pub)]
    impl Tally {
        pub fn total(&self) -> u64 {
            self.0
        }
    }
}

fn main() {}
