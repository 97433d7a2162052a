//! Attribute macros of `isolate-harness`. Use them through that crate
//! (`isolate_harness::isolated`); this crate is an implementation detail.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, Meta, Pat, ReturnType, Token, parse_macro_input};

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
/// Not supported, with a compile error saying so: methods (`self`),
/// generic, `async` and `const` functions, and argument patterns other than
/// a name.
#[proc_macro_attribute]
pub fn isolated(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    expand_isolated(attr.into(), function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand_isolated(
    attr: proc_macro2::TokenStream,
    function: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(attr.span(), "#[isolated] takes no options"));
    }
    let signature = &function.sig;
    if let Some(asyncness) = signature.asyncness {
        return Err(syn::Error::new(
            asyncness.span,
            "#[isolated] functions cannot be async",
        ));
    }
    if let Some(constness) = signature.constness {
        return Err(syn::Error::new(
            constness.span,
            "#[isolated] functions cannot be const",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            signature.generics.span(),
            "#[isolated] functions cannot be generic: each call is sent as the address of one function",
        ));
    }
    let mut patterns = Vec::new();
    let mut names = Vec::new();
    let mut types = Vec::new();
    for input in &signature.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new(
                    receiver.span(),
                    "#[isolated] cannot be used on methods",
                ));
            }
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(ident) if ident.subpat.is_none() && ident.by_ref.is_none() => {
                    patterns.push(typed.pat.clone());
                    names.push(ident.ident.clone());
                    types.push(typed.ty.clone());
                }
                pattern => {
                    return Err(syn::Error::new(
                        pattern.span(),
                        "#[isolated] arguments must be plain names",
                    ));
                }
            },
        }
    }
    let output = match &signature.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let attrs = &function.attrs;
    let visibility = &function.vis;
    let safety = &signature.safety;
    let name = &signature.ident;
    let body = &function.block;
    let inner = format_ident!("__isolated_{}", name);
    Ok(quote! {
        #(#attrs)*
        #visibility #safety fn #name(#(#names: #types),*)
            -> ::core::result::Result<#output, ::isolate_harness::Error>
        {
            fn #inner((#(#patterns,)*): (#(#types,)*)) -> #output #body
            ::isolate_harness::run(#inner, (#(#names,)*))
        }
    })
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
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let options = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(options) => options,
        Err(error) => return error.into_compile_error().into(),
    };
    expand_test(options, function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The signal names `expect_signal` accepts.
const SIGNAL_NAMES: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

fn expand_test(
    options: Punctuated<Meta, Token![,]>,
    function: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if !signature.inputs.is_empty() {
        return Err(syn::Error::new(
            signature.inputs.span(),
            "a test takes no arguments",
        ));
    }
    if let Some(asyncness) = signature.asyncness {
        return Err(syn::Error::new(asyncness.span, "a test cannot be async"));
    }
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new(
            signature.generics.span(),
            "a test cannot be generic",
        ));
    }
    let mut builder = quote!(::isolate_harness::TestOptions::new());
    for option in &options {
        let name = option
            .path()
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let value = match option {
            Meta::Path(_) => None,
            Meta::NameValue(pair) => Some(&pair.value),
            Meta::List(list) => {
                return Err(syn::Error::new(
                    list.span(),
                    "options are written `name` or `name = value`",
                ));
            }
        };
        builder = match (name.as_str(), value) {
            ("ignore", None) => quote!(#builder.ignore(None)),
            ("ignore", Some(value)) => {
                let reason = string(value)?;
                quote!(#builder.ignore(Some(#reason)))
            }
            ("should_panic", None) => quote!(#builder.should_panic(None)),
            ("should_panic", Some(value)) => {
                let expected = string(value)?;
                quote!(#builder.should_panic(Some(#expected)))
            }
            ("timeout", Some(value)) => {
                let millis = parse_duration_millis(&string(value)?).ok_or_else(|| {
                    syn::Error::new(
                        value.span(),
                        "expected a duration such as \"2s\", \"500ms\" or \"1m\"",
                    )
                })?;
                quote!(#builder.timeout(::core::time::Duration::from_millis(#millis)))
            }
            ("memory_limit", Some(value)) => {
                let bytes = parse_size(&string(value)?).ok_or_else(|| {
                    syn::Error::new(
                        value.span(),
                        "expected a size such as \"256MiB\", \"1GiB\" or \"512KiB\"",
                    )
                })?;
                quote!(#builder.memory_limit(#bytes))
            }
            ("expect_signal", Some(value)) => {
                let signal = string(value)?;
                if !SIGNAL_NAMES.contains(&signal.as_str()) {
                    return Err(syn::Error::new(
                        value.span(),
                        format!(
                            "unknown signal {signal:?}: expected a name such as \"SIGSEGV\" or \"SIGABRT\""
                        ),
                    ));
                }
                quote!(#builder.expect_signal(#signal))
            }
            ("expect_exit", Some(value)) => {
                let code = integer(value)?;
                quote!(#builder.expect_exit(#code))
            }
            ("timeout" | "memory_limit" | "expect_signal" | "expect_exit", None) => {
                return Err(syn::Error::new(
                    option.span(),
                    format!("`{name}` needs a value: `{name} = ...`"),
                ));
            }
            _ => {
                return Err(syn::Error::new(
                    option.path().span(),
                    "unknown option: expected ignore, should_panic, timeout, memory_limit, expect_signal or expect_exit",
                ));
            }
        };
    }
    let name = &signature.ident;
    let name_text = name.to_string();
    let registration = format_ident!("__ISOLATE_TEST_{}", name_text.to_uppercase());
    Ok(quote! {
        #function

        #[::isolate_harness::__private::linkme::distributed_slice(::isolate_harness::__private::TESTS)]
        #[linkme(crate = ::isolate_harness::__private::linkme)]
        #[doc(hidden)]
        static #registration: fn() -> ::isolate_harness::__private::TestCase = {
            fn describe() -> ::isolate_harness::__private::TestCase {
                ::isolate_harness::__private::TestCase {
                    module_path: ::core::module_path!(),
                    name: #name_text,
                    function: || ::isolate_harness::__private::IntoTestResult::into_test_result(#name()),
                    options: #builder,
                }
            }
            describe
        };
    })
}

fn string(value: &Expr) -> syn::Result<String> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.value()),
        _ => Err(syn::Error::new(value.span(), "expected a string literal")),
    }
}

fn integer(value: &Expr) -> syn::Result<i32> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(number),
            ..
        }) => number.base10_parse(),
        _ => Err(syn::Error::new(
            value.span(),
            "expected an integer exit code",
        )),
    }
}

/// Parses `"2s"`, `"500ms"`, `"1m"`, `"1h"` into milliseconds.
fn parse_duration_millis(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|millis| *millis > 0)
}

/// Parses `"256MiB"`, `"1GiB"`, `"512KiB"`, `"100MB"`, `"4096B"` into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|bytes| *bytes > 0)
}

#[cfg(test)]
mod tests {
    use super::{
        ItemFn, Meta, Parser, Punctuated, Token, expand_test, parse_duration_millis, parse_size,
    };

    #[::core::prelude::v1::test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration_millis("2s"), Some(2000));
        assert_eq!(parse_duration_millis("500ms"), Some(500));
        assert_eq!(parse_duration_millis("1m"), Some(60_000));
        assert_eq!(parse_duration_millis("2 weeks"), None);
        assert_eq!(parse_duration_millis("s"), None);
        assert_eq!(parse_duration_millis("0s"), None);
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("12 parsecs"), None);
    }

    fn expand(attr: &str) -> String {
        let options = Punctuated::<Meta, Token![,]>::parse_terminated
            .parse_str(attr)
            .unwrap();
        let function: ItemFn = syn::parse_str("fn dies() {}").unwrap();
        match expand_test(options, function) {
            Ok(tokens) => tokens.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[::core::prelude::v1::test]
    fn bad_options_are_errors_that_say_why() {
        assert!(expand("expect_signal = \"SIGSEGV\", timeout = \"2s\"").contains("expect_signal"));
        assert_eq!(
            expand("expect_signal = \"SIGSEGVV\""),
            "error: unknown signal \"SIGSEGVV\": expected a name such as \"SIGSEGV\" or \"SIGABRT\""
        );
        assert!(expand("timeout = \"soon\"").starts_with("error: expected a duration"));
        assert!(expand("memory_limit = 5").starts_with("error: expected a string literal"));
        assert!(expand("expect_exit = \"3\"").starts_with("error: expected an integer"));
        assert!(expand("timeout").starts_with("error: `timeout` needs a value"));
        assert!(expand("flaky").starts_with("error: unknown option"));
    }
}
