//! Why a setting cannot be used: one line naming the line, the key and the nearest valid name,
//! never quoting the config's text. Its own module, below the config and the broker settings
//! it holds, so that both can say it without importing each other.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Invalid {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Invalid {
        Invalid(s.into())
    }
}
