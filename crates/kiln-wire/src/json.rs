//! Reading a JSON object body into a wire type, naming the field of the first error (a path
//! like `jobs[3].priority`, unknown fields included).

use serde::de::DeserializeOwned;

/// Why a JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (syntax, truncation).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A JSON array where an object is expected.
    #[error("expected a JSON object")]
    NotAnObject,
    /// Well-formed JSON whose value at `field` does not fit.
    #[error("{message}")]
    Field {
        /// The offending field's path (`body` for the whole document).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl JsonError {
    /// The field the error names: the path of a [`JsonError::Field`], else `body`.
    pub fn field(&self) -> &str {
        match self {
            JsonError::Field { field, .. } => field,
            _ => "body",
        }
    }
}

/// Parses `bytes` into `T`. Every body Kiln takes is an object: an array is refused up front
/// (serde would otherwise read a struct from a sequence and name its fields `[0]`, `[1]`…).
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    if bytes.trim_ascii_start().starts_with(b"[") {
        return Err(JsonError::NotAnObject);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => JsonError::Malformed(message),
            Category::Data => JsonError::Field {
                field: field_of(&path, &message),
                message,
            },
        }
    })
}

/// The field a serde data error is about: its path, plus the unknown field's name when the
/// error is about one (serde reports those at the enclosing object).
pub fn field_of(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(name) = rest.split('`').next() {
                if path.ends_with(name) {
                    return path.to_owned();
                }
                return if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
            }
        }
    }
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}
