//! Property tests of the identity scrub: every spelling of a name in the
//! identity namespace (any case, `-` `_` `.` separators, any suffix) is removed
//! and replaced by exactly the injected identity, while near misses survive.
//! The fuzz target `header_sanitizer` checks the same on unstructured input.

use proptest::prelude::*;

use super::*;
use crate::account::{Role, UserId};

const PREFIX: &str = "x-user-";
const SEPARATORS: &[char] = &['-', '_', '.'];

/// `word` with each letter's case chosen at random.
fn random_case(word: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn separator() -> impl Strategy<Value = char> {
    proptest::sample::select(SEPARATORS)
}

/// A header-name tail: letters, digits and separators, possibly empty.
fn suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        random_case("id"),
        random_case("role"),
        random_case("email"),
        proptest::collection::vec(proptest::sample::select(b"abcXYZ09-_.".as_slice()), 1..8)
            .prop_map(|b| b.into_iter().map(char::from).collect()),
    ]
}

/// Names some backend would read as identity: `X-User-Id`, `x_USER.role`, ...
fn identity_name() -> impl Strategy<Value = String> {
    (
        random_case("x"),
        separator(),
        random_case("user"),
        separator(),
        suffix(),
    )
        .prop_map(|(x, s1, user, s2, rest)| format!("{x}{s1}{user}{s2}{rest}"))
}

/// Names close to the namespace that are not in it, and ordinary app headers.
fn other_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // No separator after "user": x-userid, X_Users.
        (
            random_case("x"),
            separator(),
            random_case("user"),
            "[a-z0-9]{1,6}"
        )
            .prop_map(|(x, s, user, rest)| format!("{x}{s}{user}{rest}")),
        // Something before the prefix: -x-user-id, xx-user-id, y_user_id.
        (
            prop_oneof![Just("-x"), Just("xx"), Just("y"), Just("ax")],
            separator(),
            suffix()
        )
            .prop_map(|(head, s, rest)| format!("{head}{s}user{s}{rest}")),
        // Prefix cut short.
        (random_case("x"), separator(), random_case("use"))
            .prop_map(|(x, s, u)| format!("{x}{s}{u}")),
        "app-[a-z0-9]{1,8}".prop_map(|s| s),
    ]
}

fn value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 =,;/-]{0,12}"
}

fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn prepare(headers: &mut HeaderMap) {
    let identity = Identity {
        user_id: UserId::parse("u-42").unwrap(),
        role: Role::parse("viewer").unwrap(),
        session: None,
        version: 0,
        expires_at: 0,
        assertion: None,
        key_id: None,
    };
    prepare_request_headers(
        headers,
        &ClientSide {
            peer: "192.0.2.9".parse().unwrap(),
            peer_header: &HeaderValue::from_static("192.0.2.9"),
            peer_trusted: false,
            client: "192.0.2.9".parse().unwrap(),
            host: Some(HeaderValue::from_static("gw.example")),
        },
        Some(&identity),
        &RouteHeaderPolicy {
            forward_authorization: false,
        },
        &IdentityScrubber::new(PREFIX),
        &IdentityHeaders::new(PREFIX).unwrap(),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn identity_spellings_never_survive_and_others_do(
        hostile in proptest::collection::vec((identity_name(), value()), 1..6),
        others in proptest::collection::vec((other_name(), value()), 0..6),
        name_them_in_connection in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in hostile.iter().chain(&others) {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        if name_them_in_connection {
            // Naming the injected headers in Connection must not remove them.
            let listed: Vec<&str> = hostile.iter().map(|(n, _)| n.as_str()).collect();
            headers.append(
                header::CONNECTION,
                HeaderValue::from_str(&format!("x-user-id, x-user-role, {}", listed.join(", "))).unwrap(),
            );
        }
        let before = headers.clone();
        prepare(&mut headers);

        let ids: Vec<_> = headers.get_all("x-user-id").iter().collect();
        prop_assert_eq!(ids, vec!["u-42"]);
        let roles: Vec<_> = headers.get_all("x-user-role").iter().collect();
        prop_assert_eq!(roles, vec!["viewer"]);
        for name in headers.keys() {
            prop_assert!(
                !fold(name.as_str()).starts_with(PREFIX) || name == "x-user-id" || name == "x-user-role",
                "{} survived", name
            );
        }
        if !name_them_in_connection {
            for (name, _) in &others {
                let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                let sent: Vec<_> = before.get_all(&name).iter().collect();
                let kept: Vec<_> = headers.get_all(&name).iter().collect();
                prop_assert_eq!(kept, sent, "{} changed", name);
            }
        }
    }

    #[test]
    fn is_identity_is_a_folded_prefix_match(
        prefix in "[a-z]{1,4}-([a-z]{1,4}-)?",
        name in "[a-zA-Z0-9._-]{1,16}",
    ) {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        prop_assert_eq!(
            IdentityScrubber::new(&prefix).is_identity(&name),
            fold(name.as_str()).starts_with(&prefix)
        );
    }
}
