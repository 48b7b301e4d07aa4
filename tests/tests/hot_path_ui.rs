//! Compile-time behaviour of `#[hot_path]`: every supported shape compiles and runs
//! (`ui/pass`); bad arguments, `const fn`, non-fn items and type errors in the body fail with
//! errors pointing at the user's tokens (`ui/fail`, compared with the committed `.stderr`).
//! Regenerate the expectations with `TRYBUILD=overwrite` after a deliberate change.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
