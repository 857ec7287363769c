use super::*;

fn ok(raw: &str) -> String {
    decide(raw)
        .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
        .as_str()
        .to_owned()
}

#[test]
fn normalizes_unambiguous_paths() {
    assert_eq!(ok("/"), "/");
    assert_eq!(ok("/api/users"), "/api/users");
    assert_eq!(ok("/api/users/"), "/api/users/");
    assert_eq!(ok("//api///users"), "/api/users");
    assert_eq!(ok("/api/./users"), "/api/users");
    assert_eq!(ok("/api/v1/../users"), "/api/users");
    assert_eq!(ok("/api/users/."), "/api/users/");
    assert_eq!(ok("/api/x/.."), "/api/");
    assert_eq!(ok("/%61pi/%7Euser"), "/api/~user");
    assert_eq!(ok("/a/%3f/%c3%a9"), "/a/%3F/%C3%A9");
    assert_eq!(ok("/a%23b"), "/a%23b");
    assert_eq!(ok("/100%25"), "/100%25");
}

#[test]
fn refuses_what_could_be_read_two_ways() {
    let cases = [
        ("api", PathError::NotAbsolute),
        ("/admin%2fusers", PathError::EncodedSeparator),
        ("/admin%2Fusers", PathError::EncodedSeparator),
        ("/admin%5cusers", PathError::EncodedSeparator),
        ("/admin\\users", PathError::Backslash),
        ("/a/%2e%2e/admin", PathError::EncodedDotSegment),
        ("/a/%2e/admin", PathError::EncodedDotSegment),
        ("/a/.%2e/admin", PathError::EncodedDotSegment),
        ("/a/%252e%252e/admin", PathError::DoubleEncoding),
        ("/a/%00", PathError::ControlCharacter),
        ("/a/%0d%0a", PathError::ControlCharacter),
        ("/admin;x=1/users", PathError::PathParameter),
        ("/admin%3Bx", PathError::PathParameter),
        ("/a#b", PathError::Fragment),
        ("/a/%c0%af", PathError::InvalidUtf8),
        ("/a/%e0%80%af", PathError::InvalidUtf8),
        ("/a/%ff", PathError::InvalidUtf8),
        ("/a/%zz", PathError::BadEscape),
        ("/a/%4", PathError::BadEscape),
        ("/..", PathError::AboveRoot),
        ("/a/../../etc", PathError::AboveRoot),
    ];
    for (raw, expected) in cases {
        assert_eq!(decide(raw), Err(expected), "{raw:?}");
    }
}

#[test]
fn decided_paths_are_fixed_points() {
    for raw in ["/a/./b/../c//d/", "/%41%42/~x", "/x/%3F%20y"] {
        let once = ok(raw);
        assert_eq!(ok(&once), once, "{raw:?}");
    }
}

#[test]
fn a_target_is_kept_as_sent_only_when_its_path_needs_no_change() {
    for (target, path, as_sent) in [
        ("/api/users?page=2&q=a%20b", "/api/users", true),
        ("/", "/", true),
        ("/a/../b?x=1", "/b", false),
        ("//admin?x", "/admin", false),
        ("/%7Euser", "/~user", false),
    ] {
        let uri: Uri = target.parse().unwrap();
        let decided = decide_target(&uri).unwrap();
        assert_eq!(decided.as_str(), path, "{target}");
        assert_eq!(decided, decide(uri.path()).unwrap(), "{target}");
        let kept = decided.target_as_sent().map(PathAndQuery::as_str);
        assert_eq!(kept, as_sent.then_some(target), "{target}");
    }
    let refused: Uri = "/a/%2e%2e/b".parse().unwrap();
    assert_eq!(decide_target(&refused), Err(PathError::EncodedDotSegment));
}
