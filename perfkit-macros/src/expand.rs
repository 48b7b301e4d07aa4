//! The work behind `#[hot_path]`, on `proc_macro2` tokens.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Ident, ItemFn, LitStr, ReturnType, Token, Type};

const VALID_KEYS: &str = "valid keys: `name = \"...\"`, `crate = \"...\"`";

/// Parsed `#[hot_path(...)]` arguments.
#[derive(Default)]
pub(crate) struct Args {
    name: Option<LitStr>,
    krate: Option<syn::Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let key: Ident = if input.peek(Token![crate]) {
                let t: Token![crate] = input.parse()?;
                Ident::new("crate", t.span)
            } else {
                input.parse().map_err(|e| {
                    syn::Error::new(e.span(), format!("expected an argument; {VALID_KEYS}"))
                })?
            };
            let key_name = key.to_string();
            let seen = match key_name.as_str() {
                "name" => args.name.is_some(),
                "crate" => args.krate.is_some(),
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown argument `{other}`; {VALID_KEYS}"),
                    ));
                }
            };
            if seen {
                return Err(syn::Error::new(
                    key.span(),
                    format!("duplicate argument `{key_name}`; {VALID_KEYS}"),
                ));
            }
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            if key_name == "name" {
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                }
                args.name = Some(lit);
            } else {
                args.krate = Some(lit.parse()?);
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Expands the attribute; on error, the original item followed by the error, so the rest
/// of the crate still sees the item.
pub(crate) fn hot_path(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(e) => return with_error(item, e),
    };
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            return with_error(
                item,
                syn::Error::new(
                    Span::call_site(),
                    "#[hot_path] applies to functions and methods (`fn` items with a body)",
                ),
            );
        }
    };
    if let Some(c) = &func.sig.constness {
        return with_error(
            item,
            syn::Error::new(
                c.span(),
                "#[hot_path] cannot instrument a `const fn`: reading the clock is not const",
            ),
        );
    }
    instrument(&args, func)
}

fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let err = e.to_compile_error();
    quote!(#item #err)
}

fn instrument(args: &Args, func: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::perfkit), ToTokens::to_token_stream);
    // An explicit label, or "" to derive one from the function's path at first call.
    let name = args.name.as_ref().map_or_else(String::new, LitStr::value);
    let span = block.span();
    let private = quote_spanned!(span=> #krate::__private);
    let (ret_ty, is_result) = match &sig.output {
        ReturnType::Default => (quote!(()), false),
        ReturnType::Type(_, ty) => {
            let mut erased = (**ty).clone();
            EraseImplTrait.visit_type_mut(&mut erased);
            (erased.to_token_stream(), returns_result(ty))
        }
    };
    let finish = if is_result {
        quote_spanned!(span=> __perfkit_guard.finish(#private::is_err(&__perfkit_ret));)
    } else {
        quote_spanned!(span=> __perfkit_guard.finish(false);)
    };
    let stmts = &block.stmts;
    let site = quote_spanned! {span=>
        fn __perfkit_path() -> &'static str {
            ::core::any::type_name_of_val(&__perfkit_path)
        }
        static __PERFKIT_SITE: #private::Site =
            #private::Site::new(#name, ::core::module_path!(), __perfkit_path);
        let mut __perfkit_guard = #private::Guard::enter(&__PERFKIT_SITE);
    };
    let body = if sig.asyncness.is_some() {
        quote_spanned! {span=>
            #site
            // A unit-returning function binds `()`: not a lint for the caller to see.
            #[allow(clippy::let_unit_value)]
            let __perfkit_ret = #private::instrument(&__PERFKIT_SITE, async move {
                #[allow(clippy::let_unit_value)]
                let __perfkit_out: #ret_ty = { #(#stmts)* };
                #[allow(unreachable_code)]
                __perfkit_out
            })
            .await;
            #finish
            __perfkit_ret
        }
    } else {
        quote_spanned! {span=>
            #site
            #[allow(clippy::let_unit_value)]
            let __perfkit_span = #private::enter_span(&__PERFKIT_SITE);
            // A closure called once, so `return` and `?` in the body come back here.
            #[allow(clippy::let_unit_value)]
            let __perfkit_ret = #private::call_once(move || {
                #[allow(clippy::let_unit_value)]
                let __perfkit_out: #ret_ty = { #(#stmts)* };
                #[allow(unreachable_code)]
                __perfkit_out
            });
            #finish
            __perfkit_ret
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}

/// Whether the written return type's last path segment is `Result`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Group(g) => returns_result(&g.elem),
        Type::Paren(p) => returns_result(&p.elem),
        _ => false,
    }
}

/// Replaces `impl Trait` with `_`, which a `let` annotation accepts.
struct EraseImplTrait;

impl VisitMut for EraseImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(t) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: Token![_](t.span()),
            });
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}
