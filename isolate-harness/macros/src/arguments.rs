//! The arguments of a function whose calls cross to a child: their names,
//! and how they travel as the one argument a call carries.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Ident, Pat, PatType};

/// The name an argument binds, when its pattern is a plain name (`name`
/// or `mut name`); `what` says, in the error, whose arguments must be.
pub(crate) fn name<'a>(argument: &'a PatType, what: &str) -> syn::Result<&'a Ident> {
    match &*argument.pat {
        Pat::Ident(ident) if ident.subpat.is_none() && ident.by_ref.is_none() => Ok(&ident.ident),
        pattern => Err(syn::Error::new_spanned(
            pattern,
            format!("{what} arguments must be plain names"),
        )),
    }
}

/// The one value a call carries for its arguments: its type, the value
/// sent, and the pattern (with the type) that takes it apart in the child.
pub(crate) struct Packed {
    pub(crate) ty: TokenStream,
    pub(crate) value: TokenStream,
    pub(crate) pattern: TokenStream,
}

/// Packs arguments, each a name, its type as it travels and the value
/// sent: one argument travels as itself (so that a `Vec<u8>` crosses as
/// its bytes), none as `()`, several as a tuple (nested past
/// [`WIDEST_TUPLE`]). The tuple's type has the span `arguments` (the
/// function's parentheses), so that the compiler points there when it is
/// not serde.
pub(crate) fn pack(
    names: &[&Ident],
    types: &[TokenStream],
    values: &[TokenStream],
    arguments: Span,
) -> Packed {
    let ty = match types {
        [ty] => ty.clone(),
        types => {
            let mut tuple = Group::new(Delimiter::Parenthesis, tuple_items(types));
            tuple.set_span(arguments);
            tuple.into_token_stream()
        }
    };
    let names: Vec<TokenStream> = names.iter().map(|name| name.to_token_stream()).collect();
    let (names, value) = match (&names[..], values) {
        ([name], [value]) => (name.clone(), value.clone()),
        _ => (tuple(&names), tuple(values)),
    };
    Packed {
        pattern: quote!(#names: #ty),
        ty,
        value,
    }
}

/// The most elements of a tuple that serde encodes.
const WIDEST_TUPLE: usize = 16;

/// `(a, b, ..)`; past [`WIDEST_TUPLE`] elements, the last one is a tuple
/// of the rest, nested as deep as needed.
fn tuple(items: &[TokenStream]) -> TokenStream {
    let items = tuple_items(items);
    quote!((#items))
}

/// What goes between the parentheses of [`tuple`].
fn tuple_items(items: &[TokenStream]) -> TokenStream {
    if items.len() <= WIDEST_TUPLE {
        return quote!(#(#items,)*);
    }
    let (head, rest) = items.split_at(WIDEST_TUPLE - 1);
    let rest = tuple(rest);
    quote!(#(#head,)* #rest,)
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::format_ident;

    use super::pack;

    fn packed(count: usize) -> (String, String) {
        let names: Vec<_> = (0..count).map(|i| format_ident!("a{i}")).collect();
        let names: Vec<_> = names.iter().collect();
        let types: Vec<TokenStream> = (0..count).map(|_| "u8".parse().unwrap()).collect();
        let values: Vec<TokenStream> = (0..count)
            .map(|i| format!("v{i}").parse().unwrap())
            .collect();
        let packed = pack(&names, &types, &values, proc_macro2::Span::call_site());
        (packed.pattern.to_string(), packed.value.to_string())
    }

    #[test]
    fn one_argument_travels_as_itself_none_as_unit_several_as_a_tuple() {
        assert_eq!(packed(0), ("() : ()".into(), "()".into()));
        assert_eq!(packed(1), ("a0 : u8".into(), "v0".into()));
        assert_eq!(
            packed(3),
            (
                "(a0 , a1 , a2 ,) : (u8 , u8 , u8 ,)".into(),
                "(v0 , v1 , v2 ,)".into()
            )
        );
    }

    #[test]
    fn more_arguments_than_serde_s_widest_tuple_nest() {
        let (pattern, value) = packed(17);
        let names: Vec<_> = (0..15).map(|i| format!("a{i} ,")).collect();
        let types = "u8 , ".repeat(15);
        assert_eq!(
            pattern,
            format!(
                "({} (a15 , a16 ,) ,) : ({}(u8 , u8 ,) ,)",
                names.join(" "),
                types
            )
        );
        assert!(value.ends_with("v14 , (v15 , v16 ,) ,)"), "{value}");
        let (sixteen, _) = packed(16);
        assert!(
            !sixteen.contains("((") && sixteen.ends_with("u8 ,)"),
            "{sixteen}"
        );
    }
}
