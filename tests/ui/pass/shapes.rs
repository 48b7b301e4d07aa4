//! Every function shape `#[hot_path]` accepts, compiled and called.
use perfkit::hot_path;
use std::fmt::Debug;

#[hot_path]
fn free(a: u32, b: u32) -> u32 {
    a + b
}

#[hot_path]
fn unit() {}

#[hot_path(name = "renamed")]
fn with_name() -> u8 {
    1
}

#[hot_path(crate = "perfkit")]
fn with_crate_path() -> u8 {
    2
}

#[hot_path]
fn early_return_and_question_mark(s: &str) -> Result<u32, std::num::ParseIntError> {
    if s.is_empty() {
        return Ok(0);
    }
    let n: u32 = s.parse()?;
    Ok(n)
}

#[hot_path]
fn question_mark_converts(s: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let n: u32 = s.parse()?;
    Ok(n)
}

#[hot_path]
async fn async_question_mark(s: String) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let n: u32 = s.parse()?;
    Ok(n)
}

#[hot_path]
fn io_result() -> std::io::Result<()> {
    Ok(())
}

#[hot_path]
fn generic<T: Clone + Debug>(x: &T) -> T
where
    T: Default,
{
    x.clone()
}

#[hot_path]
fn impl_trait(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

#[hot_path]
fn borrowed<'a>(s: &'a str) -> &'a str {
    &s[..1]
}

#[hot_path]
fn mutable_arg(mut v: Vec<u32>) -> usize {
    v.push(1);
    v.len()
}

#[hot_path]
async fn async_fn(x: u32) -> Result<u32, String> {
    if x == 0 {
        return Err("zero".to_owned());
    }
    tokio::task::yield_now().await;
    Ok(x)
}

#[hot_path]
async fn async_impl_trait() -> impl Debug {
    5
}

struct S {
    v: Vec<u32>,
}

impl S {
    #[hot_path]
    fn new() -> Self {
        S { v: vec![1] }
    }

    #[hot_path]
    fn by_ref(&self) -> &[u32] {
        &self.v
    }

    #[hot_path]
    fn by_mut(&mut self) -> &mut Vec<u32> {
        &mut self.v
    }

    #[hot_path]
    fn by_value(self) -> Vec<u32> {
        self.v
    }

    #[hot_path]
    fn boxed(self: Box<Self>) -> usize {
        self.v.len()
    }

    #[hot_path]
    fn pinned(self: std::pin::Pin<&mut Self>) -> usize {
        self.v.len()
    }

    #[hot_path]
    fn shared(self: std::sync::Arc<Self>) -> usize {
        self.v.len()
    }

    #[hot_path]
    fn by_mut_value(mut self) -> Self {
        self.v.clear();
        self
    }

    #[hot_path]
    async fn async_method(&self) -> usize {
        self.v.len()
    }
}

struct Wrapper<T>(T);

impl<T: Clone + Send + Sync> Wrapper<T> {
    #[hot_path]
    fn get(&self) -> T {
        self.0.clone()
    }

    #[hot_path]
    async fn get_async(&self) -> T {
        self.0.clone()
    }
}

trait Shape {
    fn area(&self) -> f64;
}

impl Shape for S {
    #[hot_path]
    fn area(&self) -> f64 {
        self.v.len() as f64
    }
}

fn assert_send<F: Send>(f: F) -> F {
    f
}

fn main() {
    assert_eq!(free(1, 2), 3);
    unit();
    assert_eq!(with_name() + with_crate_path(), 3);
    assert_eq!(early_return_and_question_mark(""), Ok(0));
    assert!(early_return_and_question_mark("x").is_err());
    io_result().unwrap();
    assert!(question_mark_converts("x").is_err());
    assert_eq!(question_mark_converts("4").unwrap(), 4);
    assert_eq!(generic(&7u8), 7);
    assert_eq!(impl_trait(3).count(), 3);
    assert_eq!(borrowed("hi"), "h");
    assert_eq!(mutable_arg(vec![]), 1);
    let mut s = S::new();
    assert_eq!(s.by_ref(), &[1]);
    s.by_mut().push(2);
    assert_eq!(s.area(), 2.0);
    assert_eq!(Box::new(S::new()).boxed(), 1);
    let mut p = S::new();
    assert_eq!(std::pin::Pin::new(&mut p).pinned(), 1);
    assert_eq!(std::sync::Arc::new(S::new()).shared(), 1);
    assert!(S::new().by_mut_value().v.is_empty());
    let w = Wrapper(String::from("w"));
    assert_eq!(w.get(), "w");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        assert_eq!(assert_send(async_fn(2)).await, Ok(2));
        assert!(async_fn(0).await.is_err());
        assert!(async_question_mark("x".into()).await.is_err());
        println!("{:?}", async_impl_trait().await);
        assert_eq!(s.async_method().await, 2);
        assert_eq!(assert_send(w.get_async()).await, "w");
    });
    assert_eq!(s.by_value(), vec![1, 2]);
}
