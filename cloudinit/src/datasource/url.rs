//! `--from-url`: user-data from an HTTP(S) URL.

use async_trait::async_trait;

use super::{Datasource, Error, get, http_client};

/// A URL.
pub struct Url {
    url: String,
}

impl Url {
    /// The document at `url`.
    pub fn new(url: impl Into<String>) -> Url {
        Url { url: url.into() }
    }
}

#[async_trait]
impl Datasource for Url {
    fn kind(&self) -> &'static str {
        "url"
    }

    async fn available(&self) -> bool {
        match http_client() {
            Ok(client) => matches!(get(&client, &self.url).await, Ok(Some(_))),
            Err(_) => false,
        }
    }

    async fn user_data(&self) -> Result<Vec<u8>, Error> {
        let client = http_client()?;
        get(&client, &self.url).await?.ok_or_else(|| Error::Http {
            url: self.url.clone(),
            message: "not found".into(),
        })
    }
}
