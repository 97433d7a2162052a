//! Attribute macros of `isolate-harness`. Use them through that crate
//! (`isolate_harness::isolated`); this crate is an implementation detail.

mod arguments;
mod isolated;
mod options;
mod remote;
mod test;

use proc_macro::TokenStream;
use quote::ToTokens;
use syn::{ItemFn, ItemImpl, parse_macro_input};

/// Runs every call of the function in a fresh child process.
///
/// The function's return type `T` becomes `Result<T, isolate_harness::Error>`:
/// a segfault, abort, `exit` or panic in the body is an `Err` for the
/// caller, whose process lives on. `T` must be serde-serializable and
/// deserializable; the arguments need not be, since the child is forked
/// holding them.
///
/// ```ignore
/// #[isolate_harness::isolated]
/// fn parse(input: String) -> usize {
///     unsafe_c_parser(&input)
/// }
///
/// match parse("…".to_owned()) {
///     Ok(n) => println!("{n}"),
///     Err(error) => println!("the parser died: {error}"),
/// }
/// ```
///
/// Options, with the syntax of [`#[test]`](macro@test)'s:
///
/// | option | meaning |
/// |---|---|
/// | `timeout = "2s"` | the child is killed after this long, and the call returns `Error::TimedOut` (`ms`, `s`, `m`, `h`) |
/// | `memory_limit = "256MiB"` | address space the child may grow by; an allocation past it ends the call in `Error::OutOfMemory` (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`) |
///
/// ```ignore
/// #[isolate_harness::isolated(timeout = "1s", memory_limit = "256MiB")]
/// fn decode(image: Vec<u8>) -> Vec<u8> { .. }
/// ```
///
/// The body runs as a function of the same name and arguments, so a crash
/// site names it, and the function calling itself from its body recurses
/// in the child, without forking again.
///
/// Not supported, with a compile error saying so: methods (`self`),
/// generic, `async` and `const` functions, argument patterns other than
/// a name, and unknown options.
#[proc_macro_attribute]
pub fn isolated(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    isolated::expand(attr.into(), function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes a proxy for objects of a type that live in an isolate's child:
/// on an `impl Type` block, it keeps the block as it is and adds a
/// `TypeProxy` whose functions run the block's in the child, as the Python
/// library's proxies do.
///
/// ```ignore
/// use isolate_harness::{Error, Isolate};
///
/// struct Decoder { frames: Vec<Vec<u8>> }
///
/// #[isolate_harness::remote]
/// impl Decoder {
///     pub fn new(codec: &str) -> Self { .. }
///     pub fn feed(&mut self, packet: &[u8], pts: u64, flags: u32) -> usize { .. }
///     pub fn frames(&self) -> usize { .. }
///     pub fn fork(&self) -> Self { .. }
///     pub fn finish(self) -> Vec<Vec<u8>> { .. }
/// }
///
/// let isolate = Isolate::fork()?;
/// let decoder = DecoderProxy::new(&isolate, "h264")?; // built in the child
/// decoder.feed(&packet, 0, 1)?;                        // runs there: Ok(usize)
/// let copy: DecoderProxy = decoder.fork()?;            // a new object, there too
/// let frames = decoder.finish()?;                      // moves the object out of the table
/// ```
///
/// A crash in a method is an `Err` for the caller, whose process lives
/// on: `Error::Terminated` says how the child died, and took its objects
/// with it (see `Remote`).
///
/// # What each function becomes
///
/// | in the block | on the proxy | through |
/// |---|---|---|
/// | `fn new(args..) -> Self` | `TypeProxy::new(&isolate, args..) -> Result<TypeProxy, Error>` | `Isolate::spawn` |
/// | `fn get(&self, args..) -> R`, `fn set(&mut self, args..) -> R` | `proxy.get(args..) -> Result<R, Error>`, on `&self` both: calls take turns | `Remote::call` |
/// | `fn fork(&self, args..) -> Self` (or `&mut self`) | `proxy.fork(args..) -> Result<TypeProxy, Error>`, the new object left in the child | `Remote::call_remote` |
/// | `fn finish(self, args..) -> R` | `proxy.finish(args..) -> Result<R, Error>`, consuming the proxy | `Remote::call_once` |
/// | `fn version(args..) -> R` | `TypeProxy::version(&isolate, args..) -> Result<R, Error>` | `Isolate::call` |
///
/// `Self` may also be written as the type's name. Associated functions
/// without `self` that do not return `Self` run in the child too, so that
/// everything the block does happens there (what they change, such as a
/// global, is the child's).
///
/// Arguments keep their names and types. Each crosses as a serde value,
/// as results do (`Serialize + DeserializeOwned + 'static`), a single
/// argument as itself (a `Vec<u8>` as its bytes). A whole borrowed
/// argument, `&T` (`&str`, `&[u8]`, `&Path`, `&Item`), is taken borrowed,
/// sent as its `ToOwned` copy (`String`, `Vec<u8>`, `PathBuf`, `Item`)
/// and lent to the function in the child. `Self` in an argument's or a
/// result's type is the object's type: such a value is a copy, which
/// needs the type to be serde (and `Clone`, borrowed).
///
/// An `unsafe fn` becomes an `unsafe fn` of the proxy, with the same
/// contract.
///
/// A proxy derefs to the `Remote<Type>` it wraps (for `fetch`, closures
/// through `call`, `isolate()`), and `From` turns either into the other.
/// The `doc` and `cfg` attributes of each function carry over to the
/// proxy's.
///
/// # Visibility
///
/// Each function of the proxy has the visibility of its function. The
/// proxy type itself is private to the module unless the attribute gives
/// it a visibility: `#[remote(pub)]`, `#[remote(pub(crate))]`. It does not
/// default to a wider one because it derefs to `Remote<Type>`, and a
/// proxy more public than `Type` is a compile error (E0446, private type
/// in public interface), while the attribute cannot see how public `Type`
/// is.
///
/// # What cannot be proxied
///
/// Each of these is a compile error at the item, saying why:
///
/// - a trait impl (`impl Trait for Type`): the proxy's methods return
///   `Result`, so they cannot implement the trait;
/// - a generic impl or method, or an `impl Trait` argument: a call
///   crosses as the address of one function;
/// - lifetime parameters on the impl (the object must be `'static`) or
///   a method, and a result that borrows (`-> &str`): return an owned
///   value;
/// - an argument that borrows other than as a whole `&T`
///   (`Option<&str>`), and `&mut` arguments: the child would change its
///   own copy, and the caller would never see it;
/// - an `async fn`;
/// - a method taking `self` that returns `Self`: the object would have to
///   come back; receivers other than `self`, `&self` and `&mut self`;
/// - argument patterns other than a name.
///
/// An argument or result that is not serde (`fn finish(self) -> Rc<T>`)
/// is left to the compiler, which says which trait it lacks.
///
/// Only the functions of the marked block are proxied: keep those the
/// proxy should not have in another `impl Type` block. Associated
/// constants, types and macro calls in the block are left as they are.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let block = parse_macro_input!(item as ItemImpl);
    // The block stays even when its proxy cannot be made, so that the
    // errors are about the proxy only.
    let proxy = remote::expand(attr.into(), &block).unwrap_or_else(syn::Error::into_compile_error);
    let mut tokens = block.into_token_stream();
    tokens.extend(proxy);
    tokens.into()
}

/// Marks a test of an `isolate-harness` test target: a `fn()` or a
/// `fn() -> Result<(), E>` with `E: Debug`, run in a forked child of its own.
///
/// Options, comma-separated:
///
/// | option | meaning |
/// |---|---|
/// | `ignore`, `ignore = "reason"` | skipped unless `--ignored` or `--include-ignored` |
/// | `should_panic`, `should_panic = "text"` | passes only if the test panics (with `text` in the message) |
/// | `timeout = "2s"` | killed after this long (`ms`, `s`, `m`, `h`) |
/// | `memory_limit = "256MiB"` | address space it may grow by (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`) |
/// | `expect_signal = "SIGSEGV"` | a death test: passes only if the child dies by this signal |
/// | `expect_exit = 3` | a death test: passes only if the child exits with this code |
///
/// A bad option or value is a compile error pointing at it.
///
/// Such a test runs only in a target with `harness = false` that calls
/// `isolate_harness::main!()`. Where libtest is the harness instead (a
/// unit-test module, a `[[test]]` without `harness = false`), it compiles to
/// a libtest test of the same name that fails, saying so: a misplaced test
/// is never silently skipped.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    test::expand(attr.into(), function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
