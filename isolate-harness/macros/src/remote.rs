//! `#[remote]`: a proxy type for objects that live in an isolate's child,
//! made from the `impl` block of the object's type.
//!
//! Each function of the block becomes a method of the proxy that sends a
//! call to the child as a non-capturing closure (a function pointer, valid
//! in the child since it is a fork of the same image) and the arguments as
//! one serde value; the closure calls the function there. What cannot
//! cross that way is refused here, with the reason, on the item at fault.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericParam, Ident, ImplItem, ImplItemFn, ItemImpl, ReceiverKind, ReturnType, Safety,
    Type, Visibility,
};

use crate::arguments::{self, Packed};

pub(crate) fn expand(attr: TokenStream, block: &ItemImpl) -> syn::Result<TokenStream> {
    let visibility = visibility.parse2(attr)?;
    if let Some((path, for_token)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            quote!(#path #for_token),
            "#[remote] goes on an inherent `impl Type` block: a proxy's methods return \
             `Result<_, isolate_harness::Error>`, so they cannot implement a trait",
        ));
    }
    let generics = &block.generics;
    if has_lifetimes(generics) {
        return Err(syn::Error::new_spanned(
            generics,
            "#[remote] cannot proxy a type with lifetime parameters: the object stays in the \
             child, where nothing it could borrow from the caller lives, so it must be `'static`",
        ));
    }
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(generics, generic("a generic impl")));
    }
    let ty = &*block.self_ty;
    let name = match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
    .map(|segment| &segment.ident)
    .ok_or_else(|| {
        syn::Error::new_spanned(
            ty,
            "#[remote] needs a type with a name, `impl Name`, to call its proxy `NameProxy`",
        )
    })?;
    let proxy = format_ident!("{name}Proxy");
    let object = Object { ty, proxy: &proxy };
    let mut methods = Vec::new();
    let mut errors = Vec::new();
    for item in &block.items {
        if let ImplItem::Fn(function) = item {
            match object.method(function) {
                Ok(method) => methods.push(method),
                Err(error) => errors.push(error),
            }
        }
    }
    all_of(errors)?;
    let doc = format!(
        " A `{name}` that lives in an isolate's child, made by `#[isolate_harness::remote]` on its \
         `impl` block: each method runs the method of the same name there and returns its \
         result, or the [`Error`](::isolate_harness::Error) that kept it from one. It derefs \
         to the [`Remote`](::isolate_harness::Remote) it wraps.",
    );
    let remote = quote!(::isolate_harness::Remote<#ty>);
    // Where the compiler points when the proxy is more public than the
    // type its `Deref` names: at the visibility the attribute gave.
    let deref = quote_spanned! {visibility.span()=>
        impl ::core::ops::Deref for #proxy {
            type Target = #remote;

            fn deref(&self) -> &#remote {
                &self.0
            }
        }
    };
    Ok(quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #visibility struct #proxy(#remote);

        #deref

        impl ::core::convert::From<#proxy> for #remote {
            fn from(proxy: #proxy) -> #remote {
                proxy.0
            }
        }

        impl ::core::convert::From<#remote> for #proxy {
            fn from(remote: #remote) -> #proxy {
                #proxy(remote)
            }
        }

        impl #proxy {
            #(#methods)*
        }
    })
}

/// Parses the attribute's argument: the proxy's visibility, private when
/// none is given.
fn visibility(input: ParseStream) -> syn::Result<Visibility> {
    if input.is_empty() {
        return Ok(Visibility::Inherited);
    }
    let visibility: Visibility = input.parse()?;
    if matches!(visibility, Visibility::Inherited) || !input.is_empty() {
        return Err(input.error(
            "expected the proxy's visibility, such as `#[remote(pub)]` or `#[remote(pub(crate))]`",
        ));
    }
    Ok(visibility)
}

/// Why `what`, generic, cannot be proxied.
fn generic(what: &str) -> String {
    format!(
        "#[remote] cannot proxy {what}: a call crosses to the child as the address of one \
         function, and a generic function is one per choice of its type parameters; write it \
         for one type"
    )
}

/// One error of all `errors`, if there are any.
fn all_of(errors: Vec<syn::Error>) -> syn::Result<()> {
    match errors.into_iter().reduce(|mut all, error| {
        all.combine(error);
        all
    }) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Why a borrowed result cannot be proxied.
const BORROWED_RESULT: &str = "#[remote] cannot proxy a result that borrows: it would borrow from \
                               the child, and the caller gets a copy; return an owned value \
                               (`String` for `&str`, `Vec<T>` for `&[T]`)";

/// The type a proxy is made for.
struct Object<'a> {
    ty: &'a Type,
    proxy: &'a Ident,
}

/// How a method takes its object.
enum Receiver {
    /// `&self` or `&mut self`: the object stays.
    Borrowed,
    /// `self`: the object is consumed.
    Owned,
}

/// One argument of a proxied function: its types and values on both
/// sides.
struct Argument {
    /// Its type in the proxy's signature.
    param: TokenStream,
    /// Its type as it travels.
    sent: TokenStream,
    /// The value sent, made from the proxy's argument.
    value: TokenStream,
    /// The value passed to the function in the child, made from what
    /// arrived.
    passed: TokenStream,
}

impl Object<'_> {
    /// The proxy method for `function`.
    fn method(&self, function: &ImplItemFn) -> syn::Result<TokenStream> {
        let signature = &function.sig;
        if let Some(asyncness) = signature.asyncness {
            return Err(syn::Error::new(
                asyncness.span,
                "#[remote] cannot proxy an `async fn`: its future would run in the child, which \
                 cannot hand it to the caller; make it synchronous",
            ));
        }
        let generics = &signature.generics;
        if has_lifetimes(generics) {
            return Err(syn::Error::new_spanned(
                generics,
                "#[remote] cannot proxy a method with lifetime parameters: each argument \
                 crosses to the child as an owned copy, and the result comes back as one",
            ));
        }
        if !generics.params.is_empty() || generics.where_clause.is_some() {
            return Err(syn::Error::new_spanned(
                generics,
                generic("a generic method"),
            ));
        }
        let receiver = match signature.receiver() {
            None => None,
            Some(receiver) => match receiver.kind {
                ReceiverKind::Reference(..) => Some(Receiver::Borrowed),
                ReceiverKind::Value => Some(Receiver::Owned),
                _ => {
                    return Err(syn::Error::new_spanned(
                        receiver,
                        "#[remote] proxies methods that take `&self`, `&mut self` or `self`: \
                         the object stays in the child, and no `Box`, `Rc` or `Pin` of it \
                         exists there",
                    ));
                }
            },
        };
        let output = match &signature.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        };
        let returns_self = output.is_some_and(|ty| self.is_self(ty));
        let mut errors = Vec::new();
        if let (Some(Receiver::Owned), true, Some(output)) = (&receiver, returns_self, output) {
            errors.push(syn::Error::new_spanned(
                output,
                "#[remote] cannot proxy a method that takes `self` and returns `Self`: the \
                 object it returns would have to come back to the caller; take `&self` or \
                 `&mut self` to get a new proxy of the object it returns",
            ));
        }
        if let Some(output) = output {
            if contains(quote!(#output), &is_impl) {
                errors.push(syn::Error::new_spanned(
                    output,
                    "#[remote] cannot proxy an `impl Trait` result: the caller needs a type it \
                     can decode the result as; name the type",
                ));
            } else if contains(quote!(#output), &is_borrow) {
                errors.push(syn::Error::new_spanned(output, BORROWED_RESULT));
            }
        }
        let mut names = Vec::new();
        let mut arguments = Vec::new();
        for input in &signature.inputs {
            if let FnArg::Typed(typed) = input {
                match arguments::name(typed, "a proxied method's")
                    .and_then(|name| Ok((name, self.argument(name, &typed.ty)?)))
                {
                    Ok((name, argument)) => {
                        names.push(name);
                        arguments.push(argument);
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        all_of(errors)?;
        let params = arguments.iter().map(|argument| &argument.param);
        let types: Vec<_> = arguments.iter().map(|a| a.sent.clone()).collect();
        let values: Vec<_> = arguments.iter().map(|a| a.value.clone()).collect();
        let passed = arguments.iter().map(|argument| &argument.passed);
        let Packed {
            ty: sent,
            value,
            pattern,
        } = arguments::pack(&names, &types, &values, signature.paren_token.span.join());
        let result = match output {
            Some(output) => self.replace_self(quote!(#output)),
            None => quote!(()),
        };

        let ty = self.ty;
        let proxy = self.proxy;
        let name = &signature.ident;
        let this = Ident::new("this", Span::mixed_site());
        let isolate = Ident::new("isolate", Span::mixed_site());
        let (first, target, object) = match receiver {
            None => (
                quote!(#isolate: &::isolate_harness::Isolate,),
                quote!(#isolate),
                None,
            ),
            Some(Receiver::Borrowed) => (quote!(&self,), quote!(self.0), Some(quote!(&mut #ty))),
            Some(Receiver::Owned) => (quote!(self,), quote!(self.0), Some(quote!(#ty))),
        };
        let object_param = object.as_ref().map(|object| quote!(#this: #object,));
        let object_argument = object.as_ref().map(|_| quote!(#this,));
        let call = quote!(<#ty>::#name(#object_argument #(#passed),*));
        let (unsafety, call) = match signature.safety {
            Safety::Unsafe(_) => (quote!(unsafe), quote!(unsafe { #call })),
            _ => (quote!(), call),
        };
        let closure = quote!(|#object_param #pattern| #call);
        // A new object stays in the child, and comes back as a proxy.
        let body = match (&receiver, returns_self) {
            (None, true) => quote!(#target.spawn::<#sent, #ty>(#closure, #value).map(#proxy)),
            (Some(_), true) => {
                quote!(#target.call_remote::<#sent, #ty>(#closure, #value).map(#proxy))
            }
            (Some(Receiver::Owned), false) => {
                quote!(#target.call_once::<#sent, #result>(#closure, #value))
            }
            (_, false) => quote!(#target.call::<#sent, #result>(#closure, #value)),
        };
        let result = if returns_self { quote!(#proxy) } else { result };
        let attrs = function
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("doc") || attr.path().is_ident("cfg"));
        let visibility = &function.vis;
        // The method's arguments and their tuple are the user's to shape:
        // the lints on their number and type are not the proxy's to raise.
        Ok(quote! {
            #(#attrs)*
            #[allow(clippy::too_many_arguments, clippy::type_complexity)]
            #visibility #unsafety fn #name(#first #(#names: #params),*)
                -> ::core::result::Result<#result, ::isolate_harness::Error>
            {
                #body
            }
        })
    }

    /// How argument `name` of type `ty` crosses: by value, or, for a
    /// whole `&T`, borrowed by the proxy, sent as a `T::Owned` and lent to
    /// the function in the child.
    fn argument(&self, name: &Ident, ty: &Type) -> syn::Result<Argument> {
        if contains(quote!(#ty), &is_impl) {
            return Err(syn::Error::new_spanned(
                ty,
                "#[remote] cannot proxy an `impl Trait` argument: it makes the method generic, \
                 and a call crosses to the child as the address of one function; name a type",
            ));
        }
        let mut bare = ty;
        while let Type::Group(syn::TypeGroup { elem, .. })
        | Type::Paren(syn::TypeParen { elem, .. }) = bare
        {
            bare = elem;
        }
        if let Type::Reference(reference) = bare {
            if let Some(mutability) = reference.mutability {
                let and = reference.and_token;
                return Err(syn::Error::new_spanned(
                    quote!(#and #mutability),
                    "#[remote] cannot proxy a `&mut` argument: the child would change its own \
                     copy, which the caller never sees; pass the value, and return what changed",
                ));
            }
            let elem = &*reference.elem;
            if reference.lifetime.is_none() && !contains(quote!(#elem), &is_borrow) {
                let elem = self.replace_self(quote!(#elem));
                return Ok(Argument {
                    param: quote!(&#elem),
                    sent: quote_spanned!(ty.span()=> <#elem as ::std::borrow::ToOwned>::Owned),
                    value: quote!(<#elem as ::std::borrow::ToOwned>::to_owned(#name)),
                    passed: quote!(::std::borrow::Borrow::<#elem>::borrow(&#name)),
                });
            }
        }
        if contains(quote!(#ty), &is_borrow) {
            return Err(syn::Error::new_spanned(
                ty,
                "#[remote] cannot proxy an argument that holds a borrow: the child gets an owned \
                 copy of each argument, made by `ToOwned` for a whole `&T` (a `&str` goes as a \
                 `String`), and no copy is made of borrows inside a type",
            ));
        }
        let ty = self.replace_self(quote!(#ty));
        Ok(Argument {
            param: ty.clone(),
            sent: ty,
            value: quote!(#name),
            passed: quote!(#name),
        })
    }

    /// Whether `ty` is the object's type: `Self`, or its name as the
    /// `impl` writes it.
    fn is_self(&self, ty: &Type) -> bool {
        let own = self.ty;
        let text = quote!(#ty).to_string();
        text == "Self" || text == quote!(#own).to_string()
    }

    /// `tokens` with `Self` replaced by the object's type, since in the
    /// proxy's `impl` it would name the proxy.
    fn replace_self(&self, tokens: TokenStream) -> TokenStream {
        let ty = self.ty;
        let mut tokens = tokens.into_iter().peekable();
        let mut replaced = TokenStream::new();
        while let Some(token) = tokens.next() {
            match token {
                TokenTree::Ident(ident) if ident == "Self" => {
                    // `Self::CONST` becomes `<Type>::CONST`, which parses
                    // wherever a path does, even when `Type` has generic
                    // arguments.
                    let path_follows = matches!(
                        tokens.peek(),
                        Some(TokenTree::Punct(punct)) if punct.as_char() == ':'
                    );
                    replaced.extend(if path_follows {
                        quote!(<#ty>)
                    } else {
                        quote!(#ty)
                    });
                }
                TokenTree::Group(group) => {
                    let mut inner =
                        Group::new(group.delimiter(), self.replace_self(group.stream()));
                    inner.set_span(group.span());
                    replaced.extend([TokenTree::Group(inner)]);
                }
                token => replaced.extend([token]),
            }
        }
        replaced
    }
}

/// Whether any token of `tokens`, inside groups too, is one `pick` picks.
fn contains(tokens: TokenStream, pick: &impl Fn(&TokenTree) -> bool) -> bool {
    tokens.into_iter().any(|token| match &token {
        TokenTree::Group(group) => contains(group.stream(), pick),
        token => pick(token),
    })
}

/// A `&` or the `'` of a lifetime: a borrow, in a type.
fn is_borrow(token: &TokenTree) -> bool {
    matches!(token, TokenTree::Punct(punct) if matches!(punct.as_char(), '&' | '\''))
}

fn is_impl(token: &TokenTree) -> bool {
    matches!(token, TokenTree::Ident(ident) if ident == "impl")
}

/// Whether `generics` declares lifetime parameters.
fn has_lifetimes(generics: &syn::Generics) -> bool {
    generics
        .params
        .iter()
        .any(|param| matches!(param, GenericParam::Lifetime(_)))
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn expansion(attr: &str, block: &str) -> syn::Result<String> {
        let block = syn::parse_str(block).unwrap();
        expand(attr.parse().unwrap(), &block).map(|tokens| tokens.to_string())
    }

    /// The messages of the errors `block` expands to.
    fn errors(block: &str) -> Vec<String> {
        let error = expansion("", block).expect_err("an error");
        error.into_iter().map(|error| error.to_string()).collect()
    }

    #[test]
    fn each_function_becomes_a_proxy_function_of_its_kind() {
        let expansion = expansion(
            "",
            "impl Tally {
                pub fn new(start: u64) -> Self { todo!() }
                fn total(&self) -> u64 { 0 }
                pub(crate) fn record(&mut self, name: &str, data: &[u8], times: u32) {}
                fn split(&mut self, share: u64) -> Tally { todo!() }
                fn finish(self) -> Vec<String> { todo!() }
                fn pid() -> u32 { 0 }
                /// Reads a byte.
                unsafe fn peek(&self, at: usize) -> u8 { 0 }
                const LIMIT: u32 = 3;
            }",
        )
        .unwrap();
        // Every proxy function leaves the lints on its arguments to the
        // method it calls.
        let allow = "# [allow (clippy :: too_many_arguments , clippy :: type_complexity)]";
        let result = |ty: &str| {
            format!(":: core :: result :: Result < {ty} , :: isolate_harness :: Error >")
        };
        for method in [
            format!(
                "{allow} pub fn new (isolate : & :: isolate_harness :: Isolate , start : u64) -> {} \
                 {{ isolate . spawn :: < u64 , Tally > (| start : u64 | < Tally > :: new (start) , start) . map (TallyProxy) }}",
                result("TallyProxy"),
            ),
            format!(
                "{allow} fn total (& self ,) -> {} \
                 {{ self . 0 . call :: < () , u64 > (| this : & mut Tally , () : () | < Tally > :: total (this ,) , ()) }}",
                result("u64"),
            ),
            format!(
                "{allow} pub (crate) fn record (& self , name : & str , data : & [u8] , times : u32) -> {} \
                 {{ self . 0 . call :: < (< str as :: std :: borrow :: ToOwned > :: Owned , \
                 < [u8] as :: std :: borrow :: ToOwned > :: Owned , u32 ,) , () > \
                 (| this : & mut Tally , (name , data , times ,) : \
                 (< str as :: std :: borrow :: ToOwned > :: Owned , \
                 < [u8] as :: std :: borrow :: ToOwned > :: Owned , u32 ,) | \
                 < Tally > :: record (this , \
                 :: std :: borrow :: Borrow :: < str > :: borrow (& name) , \
                 :: std :: borrow :: Borrow :: < [u8] > :: borrow (& data) , times) , \
                 (< str as :: std :: borrow :: ToOwned > :: to_owned (name) , \
                 < [u8] as :: std :: borrow :: ToOwned > :: to_owned (data) , times ,)) }}",
                result("()"),
            ),
            format!(
                "{allow} fn split (& self , share : u64) -> {} \
                 {{ self . 0 . call_remote :: < u64 , Tally > (| this : & mut Tally , share : u64 | \
                 < Tally > :: split (this , share) , share) . map (TallyProxy) }}",
                result("TallyProxy"),
            ),
            format!(
                "{allow} fn finish (self ,) -> {} \
                 {{ self . 0 . call_once :: < () , Vec < String > > (| this : Tally , () : () | < Tally > :: finish (this ,) , ()) }}",
                result("Vec < String >"),
            ),
            format!(
                "{allow} fn pid (isolate : & :: isolate_harness :: Isolate ,) -> {} \
                 {{ isolate . call :: < () , u32 > (| () : () | < Tally > :: pid () , ()) }}",
                result("u32"),
            ),
            format!(
                "# [doc = \" Reads a byte.\"] {allow} unsafe fn peek (& self , at : usize) -> {} \
                 {{ self . 0 . call :: < usize , u8 > \
                 (| this : & mut Tally , at : usize | unsafe {{ < Tally > :: peek (this , at) }} , at) }}",
                result("u8"),
            ),
        ] {
            assert!(expansion.contains(&method), "{method}\nnot in\n{expansion}");
        }
        assert!(!expansion.contains("LIMIT"), "{expansion}");
        assert!(
            expansion.contains(
                "impl :: core :: ops :: Deref for TallyProxy { \
                 type Target = :: isolate_harness :: Remote < Tally > ;"
            ),
            "{expansion}"
        );
    }

    #[test]
    fn the_proxy_is_private_unless_the_attribute_gives_a_visibility() {
        let block = "impl Tally {}";
        assert!(
            expansion("", block)
                .unwrap()
                .contains("] struct TallyProxy (")
        );
        assert!(
            expansion("pub", block)
                .unwrap()
                .contains("] pub struct TallyProxy (")
        );
        assert!(
            expansion("pub(crate)", block)
                .unwrap()
                .contains("] pub (crate) struct TallyProxy (")
        );
        for attr in ["crate", "pub extra"] {
            assert_eq!(
                expansion(attr, block).unwrap_err().to_string(),
                "expected the proxy's visibility, such as `#[remote(pub)]` or `#[remote(pub(crate))]`"
            );
        }
    }

    #[test]
    fn self_in_a_type_is_the_object_s_type() {
        let expansion = expansion(
            "",
            "impl Grid<u8> {
                fn merge(&mut self, other: Self, rows: &[Self], cell: [u8; Self::WIDTH]) -> Vec<Self> { todo!() }
            }",
        )
        .unwrap();
        assert!(
            expansion.contains(
                "fn merge (& self , other : Grid < u8 > , rows : & [Grid < u8 >] , \
                 cell : [u8 ; < Grid < u8 > > :: WIDTH]) \
                 -> :: core :: result :: Result < Vec < Grid < u8 > > , :: isolate_harness :: Error >"
            ),
            "{expansion}"
        );
    }

    #[test]
    fn what_cannot_cross_is_an_error_that_says_why() {
        let cases = [
            (
                "impl Display for Tally {}",
                "#[remote] goes on an inherent `impl Type` block",
            ),
            (
                "impl<T> Tally<T> {}",
                "#[remote] cannot proxy a generic impl",
            ),
            (
                "impl<'a> Tally<'a> {}",
                "#[remote] cannot proxy a type with lifetime parameters",
            ),
            ("impl [u8] {}", "#[remote] needs a type with a name"),
            (
                "impl Tally { fn f<T>(&self, t: T) {} }",
                "#[remote] cannot proxy a generic method",
            ),
            (
                "impl Tally { fn f<'a>(&self, t: &'a str) {} }",
                "#[remote] cannot proxy a method with lifetime parameters",
            ),
            (
                "impl Tally { async fn f(&self) {} }",
                "#[remote] cannot proxy an `async fn`",
            ),
            (
                "impl Tally { fn f(self: Box<Self>) {} }",
                "#[remote] proxies methods that take `&self`, `&mut self` or `self`",
            ),
            (
                "impl Tally { fn f(self) -> Self { self } }",
                "#[remote] cannot proxy a method that takes `self` and returns `Self`",
            ),
            (
                "impl Tally { fn f(&self) -> &str { \"\" } }",
                "#[remote] cannot proxy a result that borrows",
            ),
            (
                "impl Tally { fn f(&self) -> Option<&'static str> { None } }",
                "#[remote] cannot proxy a result that borrows",
            ),
            (
                "impl Tally { fn f(&self) -> impl Display { 1 } }",
                "#[remote] cannot proxy an `impl Trait` result",
            ),
            (
                "impl Tally { fn f(&self, items: &mut Vec<u8>) {} }",
                "#[remote] cannot proxy a `&mut` argument",
            ),
            (
                "impl Tally { fn f(&self, name: Option<&str>) {} }",
                "#[remote] cannot proxy an argument that holds a borrow",
            ),
            (
                "impl Tally { fn f(&self, name: &'static str) {} }",
                "#[remote] cannot proxy an argument that holds a borrow",
            ),
            (
                "impl Tally { fn f(&self, names: &[&str]) {} }",
                "#[remote] cannot proxy an argument that holds a borrow",
            ),
            (
                "impl Tally { fn f(&self, shown: impl Display) {} }",
                "#[remote] cannot proxy an `impl Trait` argument",
            ),
            (
                "impl Tally { fn f(&self, shown: &impl Display) {} }",
                "#[remote] cannot proxy an `impl Trait` argument",
            ),
            (
                "impl Tally { fn f(&self, (a, b): (u8, u8)) {} }",
                "a proxied method's arguments must be plain names",
            ),
        ];
        for (block, expected) in cases {
            let errors = errors(block);
            assert!(
                errors.len() == 1 && errors[0].starts_with(expected),
                "{block}: {errors:#?}"
            );
        }
    }

    #[test]
    fn every_item_at_fault_has_its_error() {
        let errors = errors(
            "impl Tally {
                fn fine(&self) {}
                async fn waits(&self) {}
                fn edits(&self, into: &mut String, from: &mut String) -> &str { \"\" }
            }",
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
    }
}
