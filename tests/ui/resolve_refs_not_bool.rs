#[refcache::cached(resolve_refs = "no")]
async fn echo(text: String) -> String {
    text
}

fn main() {}
