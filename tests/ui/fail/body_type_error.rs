#[perfkit::hot_path]
fn wrong_type() -> u32 {
    let s: String = 5;
    s.len() as u32
}

fn main() {
    let _ = wrong_type();
}
