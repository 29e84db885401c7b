//! The query string of the GET routes, read one way for all of them: `name=value` pairs,
//! percent-decoded (`+` is a space), in order; a name a route does not know is refused with
//! that name as the field, so a typo (`?limt=5`) is an error rather than silently ignored.

use crate::api_error::ApiError;
use reactions::{Rule, ValidationError};

/// The decoded pairs of `query` (none when there is no query).
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// The error for a parameter `name` the route does not take.
pub fn unknown_parameter(name: &str) -> ApiError {
    let shown: String = name.chars().take(40).collect();
    ApiError::Invalid(vec![ValidationError::new(shown, Rule::UnknownField)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_in_order() {
        assert_eq!(pairs(None), []);
        assert_eq!(
            pairs(Some("status=live&x=a%20b+c&flag")),
            [
                ("status".to_owned(), "live".to_owned()),
                ("x".to_owned(), "a b c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(unknown_parameter("limt").code(), "invalid_reactions");
    }
}
