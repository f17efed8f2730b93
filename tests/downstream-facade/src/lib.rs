//! A crate that depends on the facade under another name (`rc = { package = "refcache" }`): the code `#[cached]`
//! generates must still find its runtime.

use rc::{RefCache, cached};

/// A cached function in a downstream crate.
#[cached(async_timeout = 1.0)]
pub async fn shout(text: String) -> String {
    text.to_uppercase()
}

/// One with an explicit cache and a method.
#[derive(Clone, Default)]
pub struct Tools {
    cache: RefCache,
}

impl Tools {
    /// A cached method.
    #[cached(cache = self.cache)]
    pub fn whisper(&self, text: String) -> String {
        text.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_through_a_renamed_facade() {
        let response = shout("hi".into()).await.unwrap();
        assert_eq!(
            response.value_as::<String>().unwrap().as_deref(),
            Some("HI")
        );
    }

    #[test]
    fn sync_methods_too() {
        let response = Tools::default().whisper("HI".into()).unwrap();
        assert_eq!(
            response.value_as::<String>().unwrap().as_deref(),
            Some("hi")
        );
    }
}

/// The runtime path can also be named explicitly, for crates that reach refcache through a re-export.
#[cached(crate = "rc")]
pub async fn explicit(n: u8) -> u8 {
    n
}

#[cfg(test)]
mod explicit_tests {
    #[tokio::test]
    async fn an_explicit_crate_path_works() {
        assert_eq!(
            super::explicit(3).await.unwrap().value_as::<u8>().unwrap(),
            Some(3)
        );
    }
}
