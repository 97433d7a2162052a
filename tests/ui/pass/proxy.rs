//! A proxy made public beside a public type, used from another module,
//! with only some of its functions called: it compiles without a warning
//! and runs.

#![deny(warnings, missing_docs)]

mod tally {
    //! A type and its proxy.

    /// Counts what it is given.
    pub struct Tally {
        total: u64,
    }

    #[isolate_harness::remote(pub)]
    impl Tally {
        /// A tally from `start`.
        pub fn new(start: u64) -> Self {
            Tally { total: start }
        }

        /// Adds the length of `name` to the total.
        pub fn add(&mut self, name: &str) -> u64 {
            self.total += name.len() as u64;
            self.total
        }

        fn halve(&mut self) -> Self {
            self.total /= 2;
            Tally { total: self.total }
        }
    }
}

mod private {
    //! A private type, whose proxy stays private too.

    struct Secret(Vec<u8>);

    #[isolate_harness::remote]
    impl Secret {
        fn new() -> Self {
            Secret(Vec::new())
        }

        fn push(&mut self, bytes: &[u8]) -> usize {
            self.0.extend_from_slice(bytes);
            self.0.len()
        }

        fn unused(&self) -> usize {
            self.0.len()
        }
    }

    /// Pushes into a secret in `isolate`'s child.
    pub fn push(isolate: &isolate_harness::Isolate) -> usize {
        let secret = SecretProxy::new(isolate).unwrap();
        secret.push(b"abc").unwrap()
    }
}

fn main() {
    let isolate = isolate_harness::Isolate::fork().unwrap();
    let tally = tally::TallyProxy::new(&isolate, 1).unwrap();
    assert_eq!(tally.add("four").unwrap(), 5);
    assert_eq!(private::push(&isolate), 3);
}
