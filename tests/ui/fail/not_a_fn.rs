#[perfkit::hot_path]
struct NotAFunction;

fn main() {
    let _ = NotAFunction;
}
