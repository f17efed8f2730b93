#[refcache::cached]
async fn f<T: serde::Serialize>(value: T) -> u32 {
    let _ = value;
    1
}

fn main() {}
