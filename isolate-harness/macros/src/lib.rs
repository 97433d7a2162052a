//! Attribute macros of `isolate-harness`. Use them through that crate
//! (`isolate_harness::isolated`); this crate is an implementation detail.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, parse_macro_input};

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
