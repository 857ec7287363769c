//! The token signature algorithms authgate knows, by the names `[tokens]
//! algorithm` and `authgate keys generate --algorithm` use (RFC 7518 §3.1).

use jsonwebtoken::Algorithm;

/// The algorithms `[tokens] algorithm` and `keys generate` accept.
pub const ALGORITHMS: [&str; 6] = ["HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256"];

/// Reads an algorithm name from the config or the command line.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "EdDSA" => Algorithm::EdDSA,
        "ES256" => Algorithm::ES256,
        "RS256" => Algorithm::RS256,
        _ => return None,
    })
}

pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
    }
}

pub fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}
