//! The option syntax that `#[test]` and `#[isolated]` share: a
//! comma-separated list of `name` and `name = value`, and the parsers of
//! the values they have in common (durations, sizes).

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Meta, Token};

/// The options of an attribute, as written between its parentheses.
pub(crate) fn parse(attr: TokenStream) -> syn::Result<Punctuated<Meta, Token![,]>> {
    Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)
}

/// An option's name, and its value when it has one (`name = value`).
pub(crate) fn name_and_value(option: &Meta) -> syn::Result<(String, Option<&Expr>)> {
    let name = option
        .path()
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_default();
    match option {
        Meta::Path(_) => Ok((name, None)),
        Meta::NameValue(pair) => Ok((name, Some(&pair.value))),
        Meta::List(list) => Err(syn::Error::new(
            list.span(),
            "options are written `name` or `name = value`",
        )),
    }
}

/// The error for an option written without the value it needs.
pub(crate) fn needs_value(option: &Meta, name: &str) -> syn::Error {
    syn::Error::new(
        option.span(),
        format!("`{name}` needs a value: `{name} = ...`"),
    )
}

/// The error for an option the attribute does not have.
pub(crate) fn unknown(option: &Meta, expected: &str) -> syn::Error {
    syn::Error::new(
        option.path().span(),
        format!("unknown option: expected {expected}"),
    )
}

pub(crate) fn string(value: &Expr) -> syn::Result<String> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.value()),
        _ => Err(syn::Error::new(value.span(), "expected a string literal")),
    }
}

pub(crate) fn integer(value: &Expr) -> syn::Result<i32> {
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

/// A `timeout` value, `"2s"`, as a `Duration` expression.
pub(crate) fn duration(value: &Expr) -> syn::Result<TokenStream> {
    let millis = parse_duration_millis(&string(value)?).ok_or_else(|| {
        syn::Error::new(
            value.span(),
            "expected a duration such as \"2s\", \"500ms\" or \"1m\"",
        )
    })?;
    Ok(quote!(::core::time::Duration::from_millis(#millis)))
}

/// A `memory_limit` value, `"256MiB"`, in bytes.
pub(crate) fn size(value: &Expr) -> syn::Result<u64> {
    parse_size(&string(value)?).ok_or_else(|| {
        syn::Error::new(
            value.span(),
            "expected a size such as \"256MiB\", \"1GiB\" or \"512KiB\"",
        )
    })
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
    use super::{parse_duration_millis, parse_size};

    #[test]
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
}
