#[derive(Clone)]
struct S;

impl S {
    #[refcache::cached]
    async fn f(&mut self, n: u32) -> u32 {
        n
    }
}

fn main() {}
