//! `#[isolated]`: a function every call of which runs in a fresh child.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

use crate::{arguments, options};

pub(crate) fn expand(attr: TokenStream, function: ItemFn) -> syn::Result<TokenStream> {
    let mut builder = quote!(::isolate_harness::Isolate::builder());
    for option in &options::parse(attr)? {
        let (name, value) = options::name_and_value(option)?;
        builder = match (name.as_str(), value) {
            ("timeout", Some(value)) => {
                let timeout = options::duration(value)?;
                quote!(#builder.timeout(#timeout))
            }
            ("memory_limit", Some(value)) => {
                let bytes = options::size(value)?;
                quote!(#builder.memory_limit(#bytes))
            }
            ("timeout" | "memory_limit", None) => return Err(options::needs_value(option, &name)),
            _ => return Err(options::unknown(option, "timeout or memory_limit")),
        };
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
            FnArg::Typed(typed) => {
                names.push(arguments::name(typed, "#[isolated]")?);
                patterns.push(&typed.pat);
                let ty = &typed.ty;
                types.push(quote!(#ty));
            }
        }
    }
    let values: Vec<_> = names.iter().map(|name| quote!(#name)).collect();
    let arguments::Packed {
        ty: sent,
        value,
        pattern,
    } = arguments::pack(&names, &types, &values, signature.paren_token.span.join());
    let output = match &signature.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let attrs = &function.attrs;
    let visibility = &function.vis;
    let safety = &signature.safety;
    let name = &signature.ident;
    let body = &function.block;
    // The body keeps the function's name and signature, in a function of
    // its own, so that a crash site names it, and a call of the function
    // from its own body (recursion) stays in the child. The types of the
    // call are spelled out with the spans of the function's own, where
    // the compiler then points when one is not serde.
    Ok(quote! {
        #(#attrs)*
        #visibility #safety fn #name(#(#names: #types),*)
            -> ::core::result::Result<#output, ::isolate_harness::Error>
        {
            #[inline(never)]
            fn #name(#(#patterns: #types),*) -> #output #body
            #builder.run::<#sent, #output>(|#pattern| #name(#(#names),*), #value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn expansion(attr: &str, function: &str) -> String {
        let function = syn::parse_str(function).unwrap();
        match expand(attr.parse().unwrap(), function) {
            Ok(tokens) => tokens.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn the_body_keeps_the_function_s_name_and_arguments() {
        assert_eq!(
            expansion(
                "",
                "pub fn parse(mut text: String, radix: u32) -> u64 { 0 }"
            ),
            "pub fn parse (text : String , radix : u32) \
             -> :: core :: result :: Result < u64 , :: isolate_harness :: Error > { \
             # [inline (never)] fn parse (mut text : String , radix : u32) -> u64 { 0 } \
             :: isolate_harness :: Isolate :: builder () \
             . run :: < (String , u32 ,) , u64 > (| (text , radix ,) : (String , u32 ,) | parse (text , radix) , (text , radix ,)) }"
        );
    }

    #[test]
    fn options_set_the_limits_of_the_child() {
        let expansion = expansion(
            "timeout = \"1s\", memory_limit = \"256MiB\"",
            "fn bytes(data: Vec<u8>) -> usize { data.len() }",
        );
        assert!(
            expansion.contains(
                ":: isolate_harness :: Isolate :: builder () \
                 . timeout (:: core :: time :: Duration :: from_millis (1000u64)) \
                 . memory_limit (268435456u64) \
                 . run :: < Vec < u8 > , usize > (| data : Vec < u8 > | bytes (data) , data)"
            ),
            "{expansion}"
        );
    }

    #[test]
    fn bad_options_are_errors_that_say_why() {
        let function = "fn f() {}";
        assert_eq!(
            expansion("expect_exit = 3", function),
            "error: unknown option: expected timeout or memory_limit"
        );
        assert_eq!(
            expansion("timeout", function),
            "error: `timeout` needs a value: `timeout = ...`"
        );
        assert!(
            expansion("memory_limit = \"lots\"", function).starts_with("error: expected a size")
        );
    }
}
