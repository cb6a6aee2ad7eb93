use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => vec![],
        Err(e) => e
            .into_iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
endpoints = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
"#;

#[test]
fn shop_example_is_valid() {
    let text = include_str!("../../../examples/shop.toml");
    let config = parse(text).expect("examples/shop.toml must be valid");
    let addrs: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    assert_eq!(addrs, ["127.0.0.1:8080".parse().unwrap()]);
    let m = config
        .proxy
        .routes
        .find(
            "shop.example.com",
            &Method::GET,
            "/checkout/cart",
            &http::HeaderMap::new(),
        )
        .unwrap();
    let RouteAction::Proxy(p) = &m.route.action else {
        panic!("expected a proxy route");
    };
    assert_eq!(p.upstream.name(), "orders");
    assert_eq!(p.request_headers.set.len(), 1);
}

#[test]
fn reports_every_error_with_line_and_column() {
    let text = format!(
        "{BASE}
[upstreams.bad]
endpoints = [\"nowhere\"]
balancer = \"fastest\"
fail_timeout = \"10 parsecs\"

[[servers]]
default = true

[[servers.routes]]
prefix = \"/a/\"
upstream = \"missing\"

[[servers.routes]]
regex = \"(unclosed\"
upstream = \"app\"
"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("9:14: invalid endpoint address `nowhere`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("10:12: unknown balancer `fastest`"),
        "{errs:#?}"
    );
    assert!(errs[2].starts_with("11:16: invalid duration"), "{errs:#?}");
    assert!(
        errs[3].starts_with("18:12: unknown upstream `missing`"),
        "{errs:#?}"
    );
    assert!(errs[4].starts_with("21:9: invalid regex"), "{errs:#?}");
}

#[test]
fn unknown_keys_and_bad_listeners_are_errors() {
    let errs = errors("[[listeners]]\naddress = \"127.0.0.1:0\"\nport = 3\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("3:1: unknown field `port`"), "{errs:?}");
    let errs = errors("[[listeners]]\naddress = \"localhost\"\n");
    assert!(
        errs[0].starts_with("2:11: invalid listen address"),
        "{errs:?}"
    );
    let errs = errors("");
    assert!(errs[0].contains("no `[[listeners]]`"), "{errs:?}");
}

#[test]
fn route_shape_errors() {
    let text = format!(
        "{BASE}
[[servers]]
default = true

[[servers.routes]]
prefix = \"/a/\"
exact = \"/a\"
upstream = \"app\"

[[servers.routes]]
prefix = \"/b/\"
redirect = {{ status = 200, location = \"/x\" }}

[[servers.routes]]
exact = \"/c\"
upstream = \"app\"
replace_prefix = \"/d/\"
"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("exactly one of `prefix`"));
    assert!(errs[1].contains("redirect status 200"));
    assert!(errs[2].contains("`replace_prefix` needs a `prefix` route"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("1d").is_err());
    assert!(parse_duration("s").is_err());
}

#[test]
fn http3_settings_and_their_errors() {
    let text = format!(
        "{BASE}
[http3]
max_concurrent_streams = 32
max_field_section_size = 8192
address_validation = \"always\"
idle_timeout = \"20s\"
"
    );
    let config = parse(&text).expect("valid [http3]");
    assert_eq!(config.http3.max_concurrent_streams, 32);
    assert_eq!(config.http3.max_field_section_size, 8192);
    assert_eq!(
        config.http3.address_validation,
        proxy_http3::AddressValidation::Always
    );
    assert_eq!(config.http3.idle_timeout, Duration::from_secs(20));
    assert!(!config.http3.early_data);
    assert_eq!(config.listeners[0].http3, None);

    let bad = "[[listeners]]\naddress = \"127.0.0.1:0\"\nhttp3 = true\n\n\
               [http3]\nmax_concurrent_uni_streams = 2\naddress_validation = \"sometimes\"\n";
    let errs = errors(bad);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with("3:9: `http3` needs a TLS listener"),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("6:30: max_concurrent_uni_streams must be at least 3")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("unknown address_validation `sometimes`")),
        "{errs:?}"
    );
}
