#[perfkit::hot_path(label = "x")]
fn unknown_key() {}

#[perfkit::hot_path(name = "a", name = "b")]
fn duplicate_key() {}

fn main() {
    unknown_key();
    duplicate_key();
}
