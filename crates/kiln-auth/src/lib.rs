//! Kiln's API tokens: the store behind `kiln tokens …`, `kiln up`'s admin token and the API's
//! bearer authentication. No HTTP here; the API maps [`tokens::TokenError`] to its responses.

pub mod tokens;
