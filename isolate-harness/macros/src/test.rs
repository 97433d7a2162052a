//! `#[test]`: registers a test of a harness target, with its options.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::options;

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

pub(crate) fn expand(attr: TokenStream, function: ItemFn) -> syn::Result<TokenStream> {
    let options = options::parse(attr)?;
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
        let (name, value) = options::name_and_value(option)?;
        builder = match (name.as_str(), value) {
            ("ignore", None) => quote!(#builder.ignore(None)),
            ("ignore", Some(value)) => {
                let reason = options::string(value)?;
                quote!(#builder.ignore(Some(#reason)))
            }
            ("should_panic", None) => quote!(#builder.should_panic(None)),
            ("should_panic", Some(value)) => {
                let expected = options::string(value)?;
                quote!(#builder.should_panic(Some(#expected)))
            }
            ("timeout", Some(value)) => {
                let timeout = options::duration(value)?;
                quote!(#builder.timeout(#timeout))
            }
            ("memory_limit", Some(value)) => {
                let bytes = options::size(value)?;
                quote!(#builder.memory_limit(#bytes))
            }
            ("expect_signal", Some(value)) => {
                let signal = options::string(value)?;
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
                let code = options::integer(value)?;
                quote!(#builder.expect_exit(#code))
            }
            ("timeout" | "memory_limit" | "expect_signal" | "expect_exit", None) => {
                return Err(options::needs_value(option, &name));
            }
            _ => {
                return Err(options::unknown(
                    option,
                    "ignore, should_panic, timeout, memory_limit, expect_signal or expect_exit",
                ));
            }
        };
    }
    let name = &signature.ident;
    let name_text = name.to_string();
    let registration = format_ident!("__ISOLATE_TEST_{}", name_text.to_uppercase());
    let misplaced = format!(
        "`{name_text}` is an #[isolate_harness::test], which runs only in a test target with \
         `harness = false` that calls `isolate_harness::main!()`; this target runs libtest \
         (a unit-test module, or a [[test]] without `harness = false`), where it would never \
         run. Move it to such a target, e.g. in Cargo.toml: \
         [[test]] name = \"...\" harness = false"
    );
    Ok(quote! {
        #function

        // Compiled only where libtest is the harness (a harness = false
        // target is built without `cfg(test)`): a libtest test of the same
        // name, in a module of that name (modules and functions do not
        // clash), that fails saying why, so that the test is not lost in
        // silence.
        #[cfg(test)]
        #[doc(hidden)]
        mod #name {
            #[::core::prelude::v1::test]
            fn #name() {
                ::core::panic!("{}", #misplaced);
            }
        }

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

#[cfg(test)]
mod tests {
    use super::expand;

    fn expansion(attr: &str) -> String {
        let function = syn::parse_str("fn dies() {}").unwrap();
        match expand(attr.parse().unwrap(), function) {
            Ok(tokens) => tokens.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn a_test_in_a_libtest_target_fails_saying_why() {
        let expanded = expansion("");
        assert!(expanded.contains("# [cfg (test)]"), "{expanded}");
        assert!(expanded.contains("harness = false"), "{expanded}");
    }

    #[test]
    fn bad_options_are_errors_that_say_why() {
        assert!(
            expansion("expect_signal = \"SIGSEGV\", timeout = \"2s\"").contains("expect_signal")
        );
        assert_eq!(
            expansion("expect_signal = \"SIGSEGVV\""),
            "error: unknown signal \"SIGSEGVV\": expected a name such as \"SIGSEGV\" or \"SIGABRT\""
        );
        assert!(expansion("timeout = \"soon\"").starts_with("error: expected a duration"));
        assert!(expansion("memory_limit = 5").starts_with("error: expected a string literal"));
        assert!(expansion("expect_exit = \"3\"").starts_with("error: expected an integer"));
        assert!(expansion("timeout").starts_with("error: `timeout` needs a value"));
        assert!(expansion("flaky").starts_with("error: unknown option"));
    }
}
